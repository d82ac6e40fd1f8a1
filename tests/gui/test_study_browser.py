"""Study browser: patient > study > series grouping, safe labels, thumbnails, selection."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt

from vitdesk.gui.library import Library, SeriesEntry
from vitdesk.gui.state import ViewerState
from vitdesk.gui.study_browser import StudyBrowser


def _entry(key, patient, study, desc, sex="F", age="045Y", thumb=True):
    return SeriesEntry(key=key, patient_key=patient, study_key=study, modality="CT",
                       description=desc, n_slices=12, sex=sex, age=age,
                       meta={"StudyDescription": f"Chest {study}"},
                       phi={"PatientName": f"DOE^{patient}", "PatientID": f"ID{patient}"},
                       thumbnail=np.full((8, 8), 128, np.uint8) if thumb else None)


def test_tree_groups_and_hides_identifiers(qtbot):
    lib, viewer = Library(), ViewerState()
    b = StudyBrowser(lib, viewer)
    qtbot.addWidget(b)
    selected = []
    b.series_selected.connect(selected.append)
    lib.add([_entry("s1", "patientaaaaa", "st1", "axial"),
             _entry("s2", "patientaaaaa", "st1", "coronal recon", thumb=False),
             _entry("s3", "patientbbbbb", "st2", "head", sex="M", age="070Y")])
    m = b.model
    assert m.rowCount() == 2  # two patients
    p0 = m.item(0)
    assert p0.text() == "Patient patien · F 45y"
    assert p0.rowCount() == 1 and p0.child(0).text() == "Chest st1"
    assert p0.child(0).rowCount() == 2  # two series in the study
    assert p0.child(0).child(0).text() == "CT · axial"
    assert not p0.child(0).child(0).icon().isNull()
    assert p0.child(0).child(1).icon().isNull()
    assert selected == ["s1"]  # the first series opens by itself
    assert "DOE" not in p0.text()
    viewer.set_show_phi(True)
    assert p0.text().startswith("DOE^patientaaaaa · IDpatientaaaaa")
    b.select("s3")
    assert selected[-1] == "s3" and b.current_key() == "s3"
    lib.add([_entry("s1", "patientaaaaa", "st1", "axial")])  # re-import: no duplicate
    assert b.series_keys() == ["s1", "s2", "s3"]
    lib.clear()
    assert m.rowCount() == 0 and b.series_keys() == []


def _browser(qtbot):
    lib, viewer = Library(), ViewerState()
    b = StudyBrowser(lib, viewer)
    qtbot.addWidget(b)
    lib.add([_entry("3ab31538aaaa", "patientaaaaa", "st1", "lung 1mm"),
             _entry("77cc00001111", "patientaaaaa", "st1", "mediastinum"),
             _entry("9f9f9f9f9f9f", "patientbbbbb", "st2", "lung 5mm")])
    mr = _entry("abcdefabcdef", "patientccccc", "st3", "t1 brain")
    mr.modality = "MR"
    lib.add([mr])
    return lib, viewer, b


def test_search_filters_series_by_every_word(qtbot):
    _lib, viewer, b = _browser(qtbot)
    assert b.visible_keys() == ["3ab31538aaaa", "77cc00001111", "9f9f9f9f9f9f", "abcdefabcdef"]
    b.search.setText("lung")
    assert b.visible_keys() == ["3ab31538aaaa", "9f9f9f9f9f9f"]
    assert b.count_label.text() == "2 of 4 series"
    b.search.setText("lung 5mm")
    assert b.visible_keys() == ["9f9f9f9f9f9f"]
    # a patient with no matching series is hidden altogether
    assert b.tree.isRowHidden(0, b.model.indexFromItem(b.model.invisibleRootItem()))
    b.search.setText("77cc")  # the key
    assert b.visible_keys() == ["77cc00001111"]
    b.search.setText("patientc")  # the patient's safe key: all of that patient's series
    assert b.visible_keys() == ["abcdefabcdef"]
    b.search.setText("DOE^patientb")  # names match only while identifiers are shown
    assert b.visible_keys() == []
    viewer.set_show_phi(True)
    assert b.visible_keys() == ["9f9f9f9f9f9f"]
    b.search.clear()
    assert len(b.visible_keys()) == 4 and b.count_label.text() == ""


def test_modality_filter(qtbot):
    _lib, _viewer, b = _browser(qtbot)
    assert [b.modality_combo.itemText(i) for i in range(b.modality_combo.count())] == [
        "All modalities", "CT", "MR"]
    b.modality_combo.setCurrentText("MR")
    assert b.visible_keys() == ["abcdefabcdef"]
    b.search.setText("lung")
    assert b.visible_keys() == []
    b.modality_combo.setCurrentText("CT")
    assert b.visible_keys() == ["3ab31538aaaa", "9f9f9f9f9f9f"]


def test_slice_reference_in_the_search_asks_for_that_slice(qtbot):
    from vitdesk.gui.study_browser import parse_slice_ref

    assert parse_slice_ref("3ab31538#9") == ("3ab31538", 9)
    assert parse_slice_ref(" 3AB31538 # 12 ") == ("3ab31538", 12)
    assert parse_slice_ref("3ab31538") is None and parse_slice_ref("ab#2") is None
    _lib, _viewer, b = _browser(qtbot)
    asked = []
    b.slice_requested.connect(lambda k, i: asked.append((k, i)))
    b.search.setText("3ab31538#9")
    assert b.visible_keys() == ["3ab31538aaaa"]  # the filter shows the series
    qtbot.keyClick(b.search, Qt.Key.Key_Return)
    assert asked == [("3ab31538", 8)]  # slice 9 counted from 1 = index 8
    b.search.setText("lung#2")  # no series key starts so: an ordinary search, no request
    qtbot.keyClick(b.search, Qt.Key.Key_Return)
    assert asked == [("3ab31538", 8)] and b.visible_keys() == []
