"""Write report.html and report.pdf from a ReportData, after the PHI guard."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vitdesk.fileio import disk_full_error, finish_temp_file, is_disk_full
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
    data_html = doc.encode("utf-8")
    tmps: list[str] = []
    target = html_path  # the file being written, for a full-disk message
    try:
        for suffix in (".html.tmp", ".pdf.tmp"):
            fd, tmp = tempfile.mkstemp(prefix=".report.", dir=out, suffix=suffix)
            os.close(fd)
            tmps.append(tmp)
        Path(tmps[0]).write_bytes(data_html)
        target = pdf_path
        pages = render_pdf(data, sections, Path(tmps[1]))
        for tmp in tmps:
            finish_temp_file(tmp)
        os.replace(tmps[0], html_path)
        os.replace(tmps[1], pdf_path)
    except Exception as exc:
        written = sum(os.path.getsize(t) for t in tmps if os.path.exists(t))
        if is_disk_full(exc, out, None, written):
            _remove(tmps)
            # the PDF's size is not known before it is drawn: at least the HTML's
            raise disk_full_error(target, max(written, len(data_html))) from None
        raise
    finally:
        _remove(tmps)
    return ReportFiles(html_path, pdf_path, pages)


def _remove(paths: Iterable[str]) -> None:
    for tmp in paths:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
