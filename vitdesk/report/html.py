"""Self-contained HTML report: inline CSS, figures as base64 PNG, escaped text."""

from __future__ import annotations

import base64
import html
import io

import numpy as np

from vitdesk.report.data import NOTICE, ReportData
from vitdesk.report.sections import Section, Table

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1d2330;
       max-width: 60rem; margin: 0 auto; padding: 3.2rem 1.5rem; line-height: 1.4; }
.notice { background: #8b1a1a; color: #fff; font-weight: 600; text-align: center;
          padding: .35rem; letter-spacing: .02em; }
header.notice { position: fixed; top: 0; left: 0; right: 0; }
footer.notice { position: fixed; bottom: 0; left: 0; right: 0; }
h1 { margin-bottom: .2rem; } .sub { color: #5a6272; margin-top: 0; }
section { page-break-inside: avoid; break-inside: avoid; margin-top: 1.6rem; }
h2 { border-bottom: 2px solid #d5dae3; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .9rem; }
caption { text-align: left; font-weight: 600; padding-bottom: .25rem; }
th, td { border: 1px solid #cfd5df; padding: .25rem .55rem; text-align: left;
         vertical-align: top; }
th { background: #eef1f6; }
img.fig { max-width: 100%; display: block; margin: .5rem 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(11rem, 1fr)); gap: .6rem; }
.grid figure { margin: 0; } .grid img { width: 100%; image-rendering: pixelated; }
figcaption { font-size: .8rem; color: #5a6272; }
@media print {
  body { padding: 2.2rem .5rem; max-width: none; }
  section { page-break-before: always; } section.first { page-break-before: auto; }
  .notice { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


def _png_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def rgb_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 RGB array (matplotlib's writer; no extra dependency)."""
    from matplotlib.image import imsave

    buf = io.BytesIO()
    imsave(buf, np.asarray(image, dtype=np.uint8), format="png")
    return buf.getvalue()


def _table(t: Table) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>"
                   for row in t.rows)
    cap = f"<caption>{e(t.caption)}</caption>" if t.caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(s: Section, first: bool) -> str:
    e = html.escape
    cls = ' class="first"' if first else ""
    parts = [f"<section{cls}><h2>{e(s.title)}</h2>"]
    parts += [f"<p>{e(p)}</p>" for p in s.paragraphs]
    parts += [_table(t) for t in s.tables]
    if s.images:
        cells = "".join(
            f'<figure><img alt="{e(cap)}" src="data:image/png;base64,{_png_b64(rgb_png(img))}">'
            f"<figcaption>{e(cap)}</figcaption></figure>" for img, cap in s.images)
        parts.append(f'<div class="grid">{cells}</div>')
    else:
        for png in s.pngs():
            parts.append(f'<img class="fig" alt="{e(s.title)}" '
                         f'src="data:image/png;base64,{_png_b64(png)}">')
    parts.append("</section>")
    return "\n".join(parts)


def render_html(data: ReportData, sections: list[Section]) -> str:
    """The complete HTML document as a string."""
    e = html.escape
    sub = " · ".join(x for x in (data.subtitle, data.created) if x)
    body = "\n".join(_section(s, i == 0) for i, s in enumerate(sections))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{e(data.title)}</title><style>{CSS}</style></head><body>\n"
        f'<header class="notice" role="note">{e(NOTICE)}</header>\n'
        f"<h1>{e(data.title)}</h1>" + (f'<p class="sub">{e(sub)}</p>' if sub else "")
        + f"\n{body}\n"
        f'<footer class="notice" role="note">{e(NOTICE)}</footer>\n</body></html>\n'
    )
