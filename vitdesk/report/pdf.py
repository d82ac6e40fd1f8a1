"""PDF report with matplotlib's PdfPages: A4 pages of text, tables and figures.

Each section starts a new page; content that does not fit flows onto further
pages. Every page carries the research-use notice in its header and footer.
Tables are monospace text: long cells wrap within their column (the row grows),
and a table that runs off a page continues on the next with its header repeated.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.image import imread
from matplotlib.lines import Line2D

from vitdesk.report.data import NOTICE, ReportData
from vitdesk.report.sections import Section, Table

A4 = (8.27, 11.69)
TOP, BOTTOM, LEFT = 0.935, 0.06, 0.07
LINE = 0.0155  # height of one 8-pt text line in figure units
NOTICE_COLOUR = "#8b1a1a"
TABLE_PT = 7
# characters of TABLE_PT monospace that fit between the margins (DejaVu Sans Mono
# advances 0.602 em per glyph); wider text would run off the page
TABLE_CHARS = int((1 - 2 * LEFT) * A4[0] * 72 / (0.602 * TABLE_PT))
COL_GAP = 2  # spaces between columns
MIN_COL = 8  # narrowest column a wide table squeezes to


class _Pages:
    """A cursor over A4 pages; opens a new page when an item does not fit."""

    def __init__(self, pdf: PdfPages, title: str) -> None:
        self.pdf, self.title = pdf, title
        self.fig: Figure | None = None
        self.y = TOP
        self.count = 0

    def new_page(self) -> None:
        self.flush()
        self.fig = Figure(figsize=A4)
        self.count += 1
        for y, va in ((0.985, "top"), (0.012, "bottom")):
            self.fig.text(0.5, y, NOTICE, ha="center", va=va, fontsize=9, weight="bold",
                          color="white", bbox={"facecolor": NOTICE_COLOUR, "edgecolor": "none",
                                               "boxstyle": "square,pad=0.35"})
        self.fig.text(LEFT, 0.035, self.title, fontsize=7, color="#5a6272", va="bottom")
        self.fig.text(1 - LEFT, 0.035, f"page {self.count}", fontsize=7, color="#5a6272",
                      ha="right", va="bottom")
        self.y = TOP

    def fits(self, height: float) -> bool:
        """Whether ``height`` fits below the cursor on the current page."""
        return self.fig is not None and self.y - height >= BOTTOM

    def need(self, height: float) -> Figure:
        if not self.fits(height):
            self.new_page()
        assert self.fig is not None
        return self.fig

    def text(self, s: str, size: float = 8, weight: str = "normal", family: str = "sans-serif",
             width: int = 110) -> None:
        lines = textwrap.wrap(s, width=width) or [""]
        step = LINE * size / 8
        for line in lines:
            fig = self.need(step)
            fig.text(LEFT, self.y, line, fontsize=size, weight=weight, family=family, va="top")
            self.y -= step

    def gap(self, h: float = 0.008) -> None:
        self.y -= h

    def image(self, rgb: np.ndarray) -> None:
        h, w = rgb.shape[:2]
        width = 1 - 2 * LEFT
        height = width * (h / w) * (A4[0] / A4[1])
        if height > TOP - BOTTOM:  # too tall for any page: shrink to fit
            scale = (TOP - BOTTOM) / height
            width, height = width * scale, height * scale
        fig = self.need(height)
        ax = fig.add_axes((LEFT, self.y - height, width, height))
        ax.imshow(rgb, interpolation="antialiased")
        ax.axis("off")
        self.y -= height + 0.01

    def flush(self) -> None:
        if self.fig is not None:
            self.pdf.savefig(self.fig)
            self.fig = None


def _column_widths(natural: list[int], budget: int) -> list[int]:
    """Fit columns into ``budget`` characters: narrow ones keep their width, wide ones share.

    Water-filling: a column narrower than an equal share of what is left keeps its
    natural width; the rest split the remainder evenly (never below ``MIN_COL``).
    """
    avail = budget - COL_GAP * (len(natural) - 1)
    if sum(natural) <= avail:
        return list(natural)
    widths = list(natural)
    wide = set(range(len(natural)))
    while True:
        share = (avail - sum(widths[i] for i in range(len(natural)) if i not in wide)) / len(wide)
        fixed = {i for i in wide if natural[i] <= share}
        if not fixed:
            break
        wide -= fixed
    left = avail - sum(widths[i] for i in range(len(natural)) if i not in wide)
    for k, i in enumerate(sorted(wide)):
        # spread the remainder so the wide columns use the whole budget
        widths[i] = min(natural[i], max(MIN_COL, left // len(wide) + (k < left % len(wide))))
    return widths


def _wrap_row(cells: list[str], widths: list[int]) -> list[str]:
    """One table row as text lines: each cell wrapped to its column, padded to align."""
    cols = [textwrap.wrap(c, width=w) or [""] for c, w in zip(cells, widths, strict=True)]
    height = max(len(c) for c in cols)
    return [(" " * COL_GAP).join((c[k] if k < len(c) else "").ljust(w)
                                 for c, w in zip(cols, widths, strict=True)).rstrip()
            for k in range(height)]


def _table_rows(t: Table, budget: int = TABLE_CHARS) -> tuple[list[str], list[list[str]]]:
    """(header lines incl. the rule, lines of each body row) of a table, wrapped to ``budget``."""
    n = max(len(t.header), *(len(r) for r in t.rows)) if t.rows else len(t.header)
    rows = [[str(c) for c in r] + [""] * (n - len(r)) for r in [t.header, *t.rows]]
    natural = [max(1, *(len(r[i]) for r in rows)) for i in range(n)]
    widths = _column_widths(natural, budget)
    header = [*_wrap_row(rows[0], widths), (" " * COL_GAP).join("-" * w for w in widths)]
    return header, [_wrap_row(r, widths) for r in rows[1:]]


def _draw_table(pages: _Pages, t: Table) -> None:
    """Draw a table row by row; a row that does not fit starts a page with the header again."""
    header, body = _table_rows(t)
    step = LINE * TABLE_PT / 8
    ruled = any(len(r) > 1 for r in body)  # rows of several lines need a visible boundary

    def lines(block: list[str]) -> None:
        for line in block:
            fig = pages.need(step)
            fig.text(LEFT, pages.y, line, fontsize=TABLE_PT, family="monospace", va="top")
            pages.y -= step

    # the header goes with the first row: never a header alone at the foot of a page
    first = len(body[0]) if body else 0
    if not pages.fits((len(header) + first) * step):
        pages.new_page()
    lines(header)
    for i, row in enumerate(body):
        if not pages.fits(len(row) * step):
            pages.new_page()
            lines(header)
        elif ruled and i:
            rule_y = pages.y + 0.25 * step
            assert pages.fig is not None
            pages.fig.add_artist(Line2D([LEFT, 1 - LEFT], [rule_y, rule_y], lw=0.3,
                                        color="#c8ccd2", transform=pages.fig.transFigure))
        # a row taller than a whole page still flows line by line
        lines(row)


def render_pdf(data: ReportData, sections: list[Section], path: Path) -> int:
    """Write the PDF; returns the number of pages."""
    with PdfPages(path, metadata={"Title": data.title, "Subject": NOTICE,
                                  "Creator": "vitdesk"}) as pdf:
        pages = _Pages(pdf, data.title)
        for i, s in enumerate(sections):
            pages.new_page()
            if i == 0:
                pages.text(data.title, size=16, weight="bold")
                sub = " · ".join(x for x in (data.subtitle, data.created) if x)
                if sub:
                    pages.text(sub, size=9)
                pages.gap(0.01)
            pages.text(s.title, size=12, weight="bold")
            pages.gap()
            for p in s.paragraphs:
                pages.text(p, size=8)
                pages.gap(0.004)
            for t in s.tables:
                if t.caption:
                    pages.text(t.caption, size=8, weight="bold")
                _draw_table(pages, t)
                pages.gap()
            for png in s.pngs():
                pages.image(imread(io.BytesIO(png)))
        pages.flush()
        return pages.count
