"""HTML and PDF reports: structure, notice on every page, escaping, PHI guard."""

from __future__ import annotations

import copy
from html.parser import HTMLParser

import numpy as np
import pytest
from pypdf import PdfReader

from vitdesk.errors import DataError
from vitdesk.report.build import build_html, write_report
from vitdesk.report.data import NOTICE, AttentionSample, ModelCard, ReportData


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.imgs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def _parse(doc: str) -> _Collect:
    p = _Collect()
    p.feed(doc)
    p.close()
    return p


def test_full_report_html_and_pdf(tmp_path, report_data):
    files = write_report(report_data, tmp_path)
    # readable like any file the user writes (mkstemp alone would leave 0600)
    from vitdesk.fileio import file_mode

    assert file_mode() & 0o600 == 0o600
    for f in (files.html, files.pdf):
        assert f.stat().st_mode & 0o777 == file_mode()
    doc = files.html.read_text(encoding="utf-8")
    parsed = _parse(doc)
    assert doc.count(NOTICE) >= 2  # header and footer
    assert {"header", "footer", "table", "section"} <= set(parsed.tags)
    # every figure is embedded, nothing is fetched from elsewhere
    assert parsed.imgs and all(s.startswith("data:image/png;base64,") for s in parsed.imgs)
    text = " ".join(parsed.text)
    for heading in ("Model card", "Training", "Evaluation", "Fairness: sex", "Fairness: age",
                    "Robustness", "Attention", "Distribution shift", "Test-time augmentation"):
        assert heading in text
    reader = PdfReader(files.pdf)
    # model card, training, evaluation, tta/transfer/shift, 2 fairness, robustness, attention
    assert len(reader.pages) == files.pages == 8
    for page in reader.pages:
        assert NOTICE in page.extract_text()
    assert not list(tmp_path.glob("*.tmp"))


def test_minimal_report_omits_missing_sections(tmp_path):
    data = ReportData(title="bare", model=ModelCard(architecture="vit_test_tiny"))
    files = write_report(data, tmp_path)
    doc = files.html.read_text()
    assert "Evaluation" not in doc and "Fairness" not in doc and "vit_test_tiny" in doc
    reader = PdfReader(files.pdf)
    assert len(reader.pages) == 1
    assert NOTICE in reader.pages[0].extract_text()


def test_text_is_escaped():
    data = ReportData(title="<script>alert(1)</script>",
                      model=ModelCard(architecture="vit & <b>bold</b>"),
                      attention=[AttentionSample(np.zeros((4, 4, 3), np.uint8), 'x" onload="y')])
    doc = build_html(data)
    assert "<script>" not in doc and "&lt;script&gt;" in doc
    assert "<b>bold</b>" not in doc and "vit &amp; &lt;b&gt;" in doc
    assert 'onload="y"' not in doc
    _parse(doc)


def test_phi_guard_refuses_and_does_not_leak(tmp_path, report_data):
    data = copy.deepcopy(report_data)
    data.attention[0].caption = "case of DOE^JANE"
    with pytest.raises(DataError) as err:
        write_report(data, tmp_path, forbidden=["Doe^Jane", "PID-12345"])
    assert "JANE" not in str(err.value).upper() and "attention" in str(err.value)
    assert not (tmp_path / "report.html").exists() and not (tmp_path / "report.pdf").exists()
    data.attention[0].caption = "case 1"
    data.model.backbone = "reviewed by doe jane"
    with pytest.raises(DataError, match="backbone"):
        build_html(data, forbidden=["DOE^JANE"])
    data.model.backbone = ""
    data.notes.append("accession PID-12345 reviewed")
    with pytest.raises(DataError):
        build_html(data, forbidden=["pid-12345"])
    data.notes.pop()
    data.attention, data.fairness, data.robustness = None, None, None  # fewer figures: faster
    assert "PID-12345" not in build_html(data, forbidden=["PID-12345", "Doe^Jane"])
