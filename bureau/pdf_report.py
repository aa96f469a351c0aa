"""The evidence report as PDF, printed from its HTML by WeasyPrint (Pango from Debian).

The page's print stylesheet (`bureau.html_style`) sets A4, the margins and the page numbers;
WeasyPrint embeds the CJK font the stylesheet names (subset to the glyphs used), so the PDF
shows its Chinese on a machine without that font. The HTML has no external resources, so no
`base_url` is needed; a caller rendering another page with relative links passes one.
"""

from __future__ import annotations

from bureau.errors import BureauError


class PdfError(BureauError):
    """The PDF cannot be rendered (WeasyPrint or its system libraries are missing)."""


def render_pdf(html: str, base_url: str | None = None) -> bytes:
    """The PDF bytes of `html`, printed with its print stylesheet (A4)."""
    try:
        # Imported here: loading Pango takes a moment, and only PDF callers need it.
        from weasyprint import HTML
    except (ImportError, OSError) as error:
        raise PdfError(
            f"Cannot render PDF: WeasyPrint or its system libraries (Pango) are missing ({error})."
        ) from None
    document = HTML(string=html, base_url=base_url, media_type="print")
    pdf = document.write_pdf()
    assert pdf is not None  # write_pdf returns the bytes when given no target
    return bytes(pdf)
