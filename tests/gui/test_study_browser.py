"""Study browser: patient > study > series grouping, safe labels, thumbnails, selection."""

from __future__ import annotations

import numpy as np

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
