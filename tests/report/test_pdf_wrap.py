"""PDF tables: long cells wrap (nothing is cut), long tables continue with their header."""

from __future__ import annotations

import re

from pypdf import PdfReader

from vitdesk.report.data import NOTICE, ModelCard, ReportData
from vitdesk.report.pdf import TABLE_CHARS, _column_widths, _table_rows, render_pdf
from vitdesk.report.sections import Section, Table


def _render(tmp_path, table: Table) -> tuple[int, list[str]]:
    data = ReportData(title="wrap test", model=ModelCard(architecture="vit_test_tiny"))
    path = tmp_path / "r.pdf"
    n = render_pdf(data, [Section("Tables", tables=[table])], path)
    return n, [page.extract_text() for page in PdfReader(path).pages]


def test_long_cell_wraps_and_every_word_is_in_the_pdf(tmp_path):
    words = [f"word{i:03d}" for i in range(80)]  # ~640 characters: several lines
    long_cell = " ".join(words)
    table = Table(["group", "note", "n"], [["female", long_cell, "12"], ["male", "short", "9"]],
                  caption="Notes")
    n, pages = _render(tmp_path, table)
    assert n == 1
    text = pages[0]
    found = set(re.findall(r"word\d{3}", text))
    assert found == set(words)  # the old renderer kept only the first ~44 characters
    for cell in ("female", "male", "short", "12", "9", "Notes", NOTICE):
        assert cell in text
    # the row grew instead of running off the page: no line is wider than the page
    header, body = _table_rows(table)
    assert len(body[0]) > 1 and len(body[1]) == 1
    assert all(len(line) <= TABLE_CHARS for line in [*header, *body[0], *body[1]])


def test_sixty_rows_continue_on_next_page_with_header_repeated(tmp_path):
    rows = [[f"row{i:02d}", f"{i * 0.01:.2f}", "a reasonably long comment " * 3]
            for i in range(60)]
    n, pages = _render(tmp_path, Table(["Subgroup", "Accuracy", "Comment"], rows))
    assert n == len(pages) > 1
    seen = []
    for text in pages:
        assert "Subgroup" in text and "Accuracy" in text  # header on every page
        seen += re.findall(r"row\d{2}", text)
    assert seen == [f"row{i:02d}" for i in range(60)]  # each row once, in order


def test_column_widths_share_the_budget():
    # narrow columns keep their width; the wide ones split what is left
    assert _column_widths([10, 200, 5, 90], 121) == [10, 50, 5, 50]
    assert _column_widths([10, 20], 121) == [10, 20]
    assert sum(_column_widths([300, 300, 300], 100)) + 2 * 2 == 100
