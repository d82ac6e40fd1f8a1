"""PDF report with matplotlib's PdfPages: A4 pages of text, tables and figures.

Each section starts a new page; content that does not fit flows onto further
pages. Every page carries the research-use notice in its header and footer.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.image import imread

from vitdesk.report.data import NOTICE, ReportData
from vitdesk.report.sections import Section, Table

A4 = (8.27, 11.69)
TOP, BOTTOM, LEFT = 0.935, 0.06, 0.07
LINE = 0.0155  # height of one 8-pt text line in figure units
NOTICE_COLOUR = "#8b1a1a"


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

    def need(self, height: float) -> Figure:
        if self.fig is None or self.y - height < BOTTOM:
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


def _table_lines(t: Table, budget: int = 132) -> list[str]:
    rows = [t.header, *t.rows]
    max_col = max(20, budget // max(len(t.header), 1))
    cells = [[str(c)[:max_col] for c in r] for r in rows]
    widths = [max(len(r[i]) if i < len(r) else 0 for r in cells) for i in range(len(t.header))]
    fmt_row = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False))  # noqa: E731
    out = [fmt_row(cells[0]), "  ".join("-" * w for w in widths)]
    out += [fmt_row(r) for r in cells[1:]]
    return out


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
                for line in _table_lines(t):
                    pages.text(line, size=7, family="monospace", width=140)
                pages.gap()
            for png in s.pngs():
                pages.image(imread(io.BytesIO(png)))
        pages.flush()
        return pages.count
