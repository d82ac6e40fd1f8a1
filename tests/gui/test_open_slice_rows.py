"""Test-split rows of the Inference tab name and open the slice the viewer shows.

A data-set row is a record (file and frame of a series); its number is the slice's
place in the loaded series (1-based, as the viewer and the browser's ``KEY#N`` search
count), and a double-click shows exactly that slice: the viewer's pixels are the
file's own HU.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from tests.gui.conftest_runs import sample_dir, tiny_run  # noqa: F401
from vitdesk.gui.run_state import CurrentRun
from vitdesk.gui.session import Session, slice_index
from vitdesk.gui.study_browser import parse_slice_ref
from vitdesk.gui.tabs.analysis_common import table_values
from vitdesk.gui.tabs.inference_tab import NOT_OPEN_TIP, InferenceTab


@pytest.fixture
def setup(qtbot, tiny_run):  # noqa: F811
    from vitdesk.engine.run import load_run

    session = Session()
    current = CurrentRun(session, device="cpu")
    tab = InferenceTab(session, current)
    qtbot.addWidget(tab)
    tab.show()
    current.set_run(load_run(tiny_run, "cpu"))
    yield session, current, tab
    session.shutdown()


def _file_hu(path: str) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(
        ds.RescaleIntercept)


def test_test_split_rows_open_their_slice_in_the_viewer(qtbot, setup, sample_dir):  # noqa: F811
    session, current, tab = setup
    tab.tta_box.setChecked(False)
    tab.source.combo.setCurrentIndex(1)  # the run's test split
    with qtbot.waitSignal(tab.run().done, timeout=30000):
        pass
    res = tab.result
    assert res.origins is not None and len(res.origins) == tab.table.rowCount() > 0
    # nothing open yet: the rows say their series and that the number is not known
    names = [row[0] for row in table_values(tab.table)]
    assert names == [f"{s[:8]}#?" for s, _p, _f in res.origins]
    # the name cell says the series is not open, whether or not the shift alarm also
    # greys the row (its tip is kept beside, never instead)
    tip = tab.table.item(0, 0).toolTip()
    assert tip.split("\n")[0] == NOT_OPEN_TIP
    assert ("outside what the model was trained on" in tip) == bool(res.outside[0])
    assert not tab.open_row(0)

    with qtbot.waitSignal(session.import_finished, timeout=30000):
        session.import_path(sample_dir)
    names = [row[0] for row in table_values(tab.table)]
    assert not any(n.endswith("#?") for n in names)
    assert tab.row_names == names
    seen_series = set()
    for i, (series, path, _frame) in enumerate(res.origins):
        ref = parse_slice_ref(names[i])  # what the browser's search would open
        assert ref is not None and series.startswith(ref[0])
        tab.table.cellDoubleClicked.emit(i, 0)
        qtbot.waitUntil(lambda s=series, n=ref[1]: session.current_key == s
                        and session.viewer.volume is not None
                        and session.viewer.index == n - 1, timeout=15000)
        assert session.viewer.axis == "axial"
        # the slice shown is the record's own file
        np.testing.assert_allclose(session.viewer.volume.hu[ref[1] - 1], _file_hu(path),
                                   atol=1e-3)
        seen_series.add(series)
    assert len(seen_series) >= 2  # rows of several series, each loaded on demand


def test_slice_index_of_a_file_and_a_multiframe_frame(tmp_path):
    files = [str(tmp_path / n) for n in ("c.dcm", "a.dcm", "b.dcm")]
    # the viewer's order (by position), not the file names'
    assert slice_index(files, tmp_path / "a.dcm") == 1
    assert slice_index(files, str(tmp_path / "x" / ".." / "b.dcm")) == 2
    assert slice_index(files, tmp_path / "zz.dcm") is None
    multi = [str(tmp_path / "m.dcm")] * 4
    assert slice_index(multi, tmp_path / "m.dcm", 2) == 2


def test_row_numbers_are_slice_numbers_when_only_some_slices_are_labelled(
        qtbot, setup, sample_dir, tmp_path):  # noqa: F811
    import shutil

    session, current, tab = setup
    src = tmp_path / "some"
    shutil.copytree(sample_dir, src)
    lines = (src / "labels.csv").read_text().splitlines()
    # slices 3 and 5 of each series only: counting labelled rows would say #1 and #2
    kept = [ln for ln in lines[1:] if "IM_0003" in ln or "IM_0005" in ln]
    (src / "labels.csv").write_text("\n".join([lines[0], *kept]) + "\n")
    with qtbot.waitSignal(session.import_finished, timeout=30000):
        session.import_path(src)
    tab.tta_box.setChecked(False)
    tab.source.set_source(str(src))
    with qtbot.waitSignal(tab.run().done, timeout=30000):
        pass
    res = tab.result
    names = [row[0] for row in table_values(tab.table)]
    assert len(names) == len(res.origins) > 0
    assert not set(names) & set(res.names)  # not the count of labelled slices
    for i in (0, len(names) - 1):
        ref = parse_slice_ref(names[i])
        with qtbot.waitSignal(tab.slice_opened, timeout=1000):  # the window focuses the viewer
            assert tab.open_row(i)
        qtbot.waitUntil(lambda r=ref: (session.current_key or "").startswith(r[0])
                        and session.viewer.index == r[1] - 1, timeout=15000)
        np.testing.assert_allclose(session.viewer.volume.hu[ref[1] - 1],
                                   _file_hu(res.origins[i][1]), atol=1e-3)
