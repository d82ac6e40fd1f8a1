"""HeaderCache: a second scan reuses unchanged headers, holds no PHI, gives the same result."""

from __future__ import annotations

import os

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.imaging.dcmfactory import PHI_STRINGS, ct_series, ct_slice
from vitdesk.imaging.dicom import load_series
from vitdesk.imaging.header_cache import HeaderCache
from vitdesk.imaging.scan import scan_path

UID_A, UID_B = "1.2.826.0.1.3680043.8.498.201", "1.2.826.0.1.3680043.8.498.202"


def _folder(root):
    stored = np.arange(5 * 6 * 6, dtype=np.int16).reshape(5, 6, 6)
    ct_series(root, stored, series_uid=UID_A, prefix="a")
    ct_series(root, stored[:3] + 7, series_uid=UID_B, prefix="b",
              extra={"SeriesDescription": "second", "SeriesNumber": 2})
    return stored


def _facts(res):
    return [(s.key, s.patient_key, s.study_key, s.files, s.modality, s.description, s.meta,
             s.phi, s.n_frames) for s in res.series]


def test_second_scan_hits_and_equals_a_fresh_scan(tmp_path):
    _folder(tmp_path / "data")
    fresh = scan_path(tmp_path / "data")
    with HeaderCache(tmp_path / "cache.sqlite") as cache:
        first = scan_path(tmp_path / "data", cache=cache)
        assert (cache.hits, cache.misses) == (0, 8)
    with HeaderCache(tmp_path / "cache.sqlite") as cache:  # reopened from disk
        second = scan_path(tmp_path / "data", cache=cache)
        assert cache.hits == 8
    assert _facts(first) == _facts(fresh) == _facts(second)
    assert second.series[0].phi and "PatientName" in second.series[0].phi  # from the file
    for a, b in zip(fresh.series, second.series, strict=True):
        va, vb = load_series(a), load_series(b)
        np.testing.assert_array_equal(va.hu, vb.hu)
        np.testing.assert_array_equal(va.slice_positions, vb.slice_positions)
        assert va.spacing == vb.spacing and va.key == vb.key


def test_cache_file_holds_no_phi(tmp_path):
    _folder(tmp_path / "data")
    with HeaderCache(tmp_path / "cache.sqlite") as cache:
        scan_path(tmp_path / "data", cache=cache)
    blob = (tmp_path / "cache.sqlite").read_bytes()
    for text in (*PHI_STRINGS, UID_A, UID_B):
        assert text.encode() not in blob, text
        assert text.encode().hex().encode() not in blob, text  # nor hex-encoded values


def test_changed_and_added_files_are_read_again(tmp_path):
    stored = _folder(tmp_path / "data")
    with HeaderCache(tmp_path / "cache.sqlite") as cache:
        scan_path(tmp_path / "data", cache=cache)
    victim = sorted((tmp_path / "data").glob("a*.dcm"))[0]
    st = os.stat(victim)
    ct_slice(victim, stored[0], z=99.0, series_uid=UID_A)  # moved to the end of the series
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    ct_slice(tmp_path / "data" / "new.dcm", stored[1], z=101.0, series_uid=UID_A)
    with HeaderCache(tmp_path / "cache.sqlite") as cache:
        res = scan_path(tmp_path / "data", cache=cache)
        assert (cache.hits, cache.misses) == (7, 2)
    (a,) = [s for s in res.series if s.n_frames == 6]  # the new file joined its series
    assert a.files[-2:] == (str(victim), str(tmp_path / "data" / "new.dcm"))
    assert _facts(res) == _facts(scan_path(tmp_path / "data"))


def test_sequences_come_back_from_the_cache(tmp_path):
    # Modality LUT and enhanced CT functional groups are sequences read raw: the
    # cached header must still give the same HU as a fresh parse.
    from tests.imaging.dcmfactory import enhanced_ct

    lut = Dataset()
    lut.LUTDescriptor = [4, 0, 16]
    lut.add_new(0x00283006, "US", [0, 10, 20, 30])
    ct_slice(tmp_path / "data" / "lut.dcm", (np.arange(16) % 4).reshape(4, 4).astype(np.int16),
             extra={"ModalityLUTSequence": Sequence([lut])})
    stored = np.arange(3 * 4 * 4, dtype=np.int16).reshape(3, 4, 4)
    enhanced_ct(tmp_path / "data" / "mf.dcm", stored, [0, 2.5, 5], [1, 2, 0.5], [-1024, 0, 10])
    fresh = scan_path(tmp_path / "data")
    with HeaderCache(tmp_path / "cache.sqlite") as cache:
        scan_path(tmp_path / "data", cache=cache)
        again = scan_path(tmp_path / "data", cache=cache)
        assert cache.hits == 2
    for a, b in zip(fresh.series, again.series, strict=True):
        np.testing.assert_array_equal(load_series(a).hu, load_series(b).hu)
    hus = sorted(float(load_series(s).hu.max()) for s in again.series)
    assert hus[0] == 30.0  # the LUT's last entry, not stored value 3 + rescale


def test_workspace_keeps_a_header_cache_in_its_folder(tmp_path):
    from vitdesk.data.workspace import Workspace

    _folder(tmp_path / "data")
    with Workspace.open(tmp_path / "ws") as ws:
        with ws.header_cache() as cache:
            assert ws.import_scan(scan_path(tmp_path / "data", cache=cache)) == 2
        with ws.header_cache() as cache:
            again = scan_path(tmp_path / "data", cache=cache)
            assert cache.hits == 8
        assert ws.import_scan(again) == 0  # same series keys: nothing new
    assert (tmp_path / "ws" / "header_cache.sqlite").is_file()


def test_files_with_a_character_set_are_cached(tmp_path):
    # pydicom converts Specific Character Set while reading; the cache keeps its text
    from vitdesk.imaging.dicom_write import write_ct_series

    hu = np.stack([np.full((8, 8), 10.0 * k, np.float32) for k in range(4)])
    write_ct_series(tmp_path / "data", hu, spacing=(2.0, 1.0, 1.0))
    with HeaderCache(tmp_path / "cache.sqlite") as cache:
        first = scan_path(tmp_path / "data", cache=cache)
        again = scan_path(tmp_path / "data", cache=cache)
        assert cache.hits == 4
    assert "SpecificCharacterSet" in again.series[0].headers[1].header
    np.testing.assert_array_equal(load_series(again.series[0]).hu, hu)
    assert _facts(first) == _facts(again)
