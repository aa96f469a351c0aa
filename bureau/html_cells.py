"""The cells of the evidence report that carry numbers, and how a number is shown.

Every number shown is an element carrying its source, so a machine can check the page:
`data-ref` is an RFC 6901 pointer, into evaluation.json or (with `data-doc="details"`) into
details.json; `data-value` is the JSON value and the text is `format_value(value, unit)`.
`bureau.evidence_verify` checks all three.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any


def format_value(value: Any, unit: str) -> str:
    """The text a number is shown as; evidence verification recomputes it from data-value."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "是 yes" if value else "否 no"
    if isinstance(value, str):
        return value
    if unit == "ratio":
        return f"{value * 100:.2f}%"
    if unit == "count":
        return f"{int(value):d}"
    if unit == "s":
        return f"{value:,.0f} s"
    if unit in ("", "number"):
        return f"{value:g}"
    return f"{value:.4g} {unit}"


def pointer(*parts: str | int) -> str:
    """RFC 6901 JSON pointer from path parts."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def num(
    tag: str,
    value: Any,
    unit: str,
    ref: str,
    *,
    css: str = "num",
    **context: str,
) -> str:
    """`<tag data-ref=… data-value=… data-unit=…>shown</tag>`; `context` adds data-* attributes
    (`doc="details"` points the reference into details.json)."""
    attributes = "".join(
        f' data-{name.replace("_", "-")}="{escape(text)}"' for name, text in context.items()
    )
    return (
        f'<{tag} class="{css}" data-ref="{escape(ref)}" '
        f'data-value="{escape(json.dumps(value, ensure_ascii=False))}" data-unit="{unit}"'
        f"{attributes}>{escape(format_value(value, unit))}</{tag}>"
    )
