"""The evidence report's stylesheet: screen and print (A4, page numbers, tables that fit).

Chinese needs a CJK font. The report names fonts in this order: WenQuanYi Micro Hei (Debian
`fonts-wqy-microhei`, which `.ci/setup` installs, 5 MB), Noto Sans CJK SC (`fonts-noto-cjk`),
then the CJK fonts of Windows and macOS. The PDF (`bureau.pdf_report`) embeds the first one
found, subset to the glyphs used.
"""

from __future__ import annotations

FONT_FAMILY = (
    '"WenQuanYi Micro Hei", "Noto Sans CJK SC", "Source Han Sans SC", "Microsoft YaHei", '
    '"PingFang SC", sans-serif'
)
# The page number in the footer of every printed page: "第 3 / 12 页 page 3 of 12".
_FOOTER = (
    '"第 " counter(page) " / " counter(pages) " 页 · page " counter(page) " of " counter(pages)'
)

SCREEN_CSS = f"""
body{{font-family:{FONT_FAMILY};margin:24px;color:#222}}
h1{{font-size:22px;margin-bottom:4px}}h2{{font-size:18px;border-bottom:2px solid #2a5d9f;
padding-bottom:2px;margin-top:28px}}table{{border-collapse:collapse;margin:8px 0;font-size:13px}}
th,td{{border:1px solid #bbb;padding:3px 6px;vertical-align:top}}th{{background:#e8eef7}}
td.num{{text-align:right;font-variant-numeric:tabular-nums}}.pass,.declared_pass,.accepted{{
color:#16702e}}.fail,.declared_fail,.not_declared,.rejected{{color:#b3261e;font-weight:bold}}
.insufficient_data,.pending-link,.missing,.no_data,.late{{color:#9a6700;font-weight:bold}}
.warn{{background:#fff4ce;padding:6px;border:1px solid #e0c060}}
.charts{{display:flex;flex-wrap:wrap;gap:16px}}
.chart{{border:1px solid #ccc;padding:6px}}.small{{font-size:12px;color:#555}}dl{{display:grid;
grid-template-columns:max-content auto;gap:2px 12px}}dt{{font-weight:bold}}dd{{margin:0}}
code{{word-break:break-all}}ul.docs{{margin:0;padding-left:16px}}
"""

def _widths(table: str, percents: tuple[int, ...]) -> str:
    """Column widths of a fixed-layout table (its header cells decide them). A cell's width
    excludes its padding and border, so the shares are scaled to leave room for them."""
    scale = 0.85
    return "".join(
        f"table#{table} th:nth-child({n}){{width:{w * scale:.1f}%}}"
        for n, w in enumerate(percents, 1)
    )


# Print: A4 with 15 mm margins (180 mm of text width), page numbers in the footer, tables at
# the full width with a fixed layout so that wide ones (the 12-month trend, the chain) wrap
# their cells instead of running off the page; header rows repeat on every page.
PRINT_CSS = f"""
@page{{size:A4;margin:15mm 15mm 18mm 15mm;
@bottom-center{{content:{_FOOTER};font-family:{FONT_FAMILY};font-size:8pt;color:#555}}
@bottom-right{{content:string(doc-id);font-family:{FONT_FAMILY};font-size:7pt;color:#777}}}}
@media print{{
body{{margin:0;font-size:9pt}}h1{{font-size:15pt}}
.doc-id{{string-set:doc-id content()}}
h2{{font-size:12pt;margin-top:14pt;break-after:avoid}}h3{{font-size:10pt;break-after:avoid}}
table{{width:100%;table-layout:fixed;font-size:7.5pt;margin:4pt 0}}
th,td{{padding:1.5pt 3pt;overflow-wrap:anywhere;word-break:break-word}}
thead{{display:table-header-group}}tr{{break-inside:avoid}}
table#monthly,table#chain,table#devices{{font-size:6.5pt}}
.charts{{gap:6pt}}.chart{{break-inside:avoid;padding:3pt}}
.chart svg{{width:82mm;height:auto}}.coverage-chart svg{{width:120mm;height:auto}}
.small{{font-size:7pt}}dl{{gap:1pt 8pt}}.warn{{padding:3pt}}
{_widths("conditions", (8, 26, 9, 8, 5, 8, 10, 12, 14))}
{_widths("chain", (5, 6, 9, 27, 9, 8, 5, 5, 13, 13))}
{_widths("declared", (30, 10, 12, 36, 12))}
}}
"""


def stylesheet() -> str:
    return SCREEN_CSS + PRINT_CSS
