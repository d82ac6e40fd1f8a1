"""Write report.html and report.pdf from a ReportData, after the PHI guard."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vitdesk.fileio import finish_temp_file
from vitdesk.report.data import ReportData, check_no_phi
from vitdesk.report.html import render_html
from vitdesk.report.pdf import render_pdf
from vitdesk.report.sections import build_sections, section_texts


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    pdf: Path
    pages: int


def build_html(data: ReportData, forbidden: Iterable[str] = ()) -> str:
    """The HTML report as a string (raises DataError if a forbidden marker appears)."""
    forbidden = list(forbidden)
    check_no_phi(data, forbidden)
    sections = build_sections(data)
    check_no_phi(None, forbidden, section_texts(sections))
    doc = render_html(data, sections)
    check_no_phi(None, forbidden, [doc])
    return doc


def write_report(
    data: ReportData, out_dir: str | Path, forbidden: Iterable[str] = ()
) -> ReportFiles:
    """Write ``out_dir/report.html`` and ``out_dir/report.pdf``.

    ``forbidden`` are markers (patient names, IDs, ...) that must not appear in any
    text; the report is refused with a DataError before anything is written if one
    does. Files are written to temporary names and renamed, so a failure never
    leaves half a report.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    forbidden = list(forbidden)
    check_no_phi(data, forbidden)
    sections = build_sections(data)
    check_no_phi(None, forbidden, section_texts(sections))
    doc = render_html(data, sections)
    check_no_phi(None, forbidden, [doc])
    html_path, pdf_path = out / "report.html", out / "report.pdf"
    fd, tmp_html = tempfile.mkstemp(dir=out, suffix=".html.tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(doc)
    fd, tmp_pdf = tempfile.mkstemp(dir=out, suffix=".pdf.tmp")
    os.close(fd)
    try:
        pages = render_pdf(data, sections, Path(tmp_pdf))
        for tmp in (tmp_html, tmp_pdf):
            finish_temp_file(tmp)
        os.replace(tmp_html, html_path)
        os.replace(tmp_pdf, pdf_path)
    finally:
        for tmp in (tmp_html, tmp_pdf):
            if os.path.exists(tmp):
                os.unlink(tmp)
    return ReportFiles(html_path, pdf_path, pages)
