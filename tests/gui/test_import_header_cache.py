"""Importing a folder into an open workspace uses its header cache: the second import
of the same folder parses only each series' first file (for its identity)."""

from __future__ import annotations

import numpy as np

from vitdesk.gui.library import import_path
from vitdesk.gui.session import Session
from vitdesk.imaging import scan
from vitdesk.imaging.dicom_write import write_ct_series


def _folder(root):
    hu = np.full((5, 16, 16), 40.0, np.float32)
    for k in range(2):
        write_ct_series(root / f"s{k}", hu + k, spacing=(2.0, 1.0, 1.0),
                        patient={"PatientID": f"P{k}", "PatientName": "DOE^JANE"},
                        series_description=f"series {k}", rng_seed=k)
    return root


def _count_parses(monkeypatch) -> list[str]:
    parsed: list[str] = []
    real = scan._read_header

    def counting(path, *args, **kwargs):
        parsed.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(scan, "_read_header", counting)
    return parsed


def test_second_import_into_a_workspace_hits_the_header_cache(tmp_path, monkeypatch):
    from vitdesk.data.workspace import Workspace

    data = _folder(tmp_path / "data")
    parsed = _count_parses(monkeypatch)
    ws = Workspace.open(tmp_path / "ws", create=True)
    try:
        first = import_path(data, workspace=ws)
        # every file parsed once, and each series' middle file for its thumbnail
        assert len(parsed) == 10 + 2
        parsed.clear()
        again = import_path(data, workspace=ws)
        # each series' first file for its identity (the cache holds no PHI), thumbnails
        assert len(parsed) == 2 + 2
        without = import_path(data)  # no workspace: no cache
        assert len(parsed) == 4 + 12
    finally:
        ws.close()
    for res in (again, without):
        assert [e.files for e in res.entries] == [e.files for e in first.entries]
        assert [e.meta for e in res.entries] == [e.meta for e in first.entries]
        assert [e.phi for e in res.entries] == [e.phi for e in first.entries]


def test_session_imports_into_an_open_workspace_through_its_cache(qtbot, tmp_path,
                                                                   monkeypatch):
    data = _folder(tmp_path / "data")
    session = Session()
    assert session.open_workspace(tmp_path / "ws", create=True) is not None
    parsed = _count_parses(monkeypatch)
    try:
        for expected in (12, 4):  # see the test above
            parsed.clear()
            task = session.import_path(data)
            with qtbot.waitSignal(session.import_finished, timeout=20000):
                pass
            qtbot.waitUntil(lambda t=task: t.has_ended(), timeout=10000)
            assert len(parsed) == expected
            assert len(session.workspace.series()) == 2
    finally:
        for t in (session.thumb_task, session.load_task, session.import_task):
            if t is not None and t.is_running():
                t.cancel()
                qtbot.waitUntil(lambda t=t: t.has_ended(), timeout=10000)
        session.close_workspace()
