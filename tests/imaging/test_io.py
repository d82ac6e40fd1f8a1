"""load_path over real files (pydicom's test data) and over bad input."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_files

from tests.imaging.dcmfactory import ct_series
from vitdesk.errors import LoadError
from vitdesk.imaging.dicom import load_series, read_slice_hu
from vitdesk.imaging.io import load_path

MAX_BYTES = 20 * 1024 * 1024


def _local_testdata() -> list[str]:
    # Only files shipped in the wheel: get_testdata_files never downloads.
    return [
        f for f in get_testdata_files() if os.path.isfile(f) and os.path.getsize(f) <= MAX_BYTES
    ]


def test_every_pydicom_test_file_loads_or_fails_cleanly():
    files = _local_testdata()
    assert len(files) > 100
    loaded = failed = 0
    outcome: dict[str, str] = {}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in files:
            try:
                res = load_path(f)
            except LoadError as exc:  # only the path itself may be refused
                assert Path(f).name in str(exc)
                failed += 1
                continue
            for err in res.errors:
                assert err.path == f and err.reason and "\n" not in err.reason
            for vol in res.volumes:
                assert vol.hu.ndim == 3 and vol.hu.dtype == np.float32
                assert np.isfinite(vol.hu).all()
                assert vol.source_files and set(vol.source_files) == {f}
            loaded += bool(res.volumes)
            failed += bool(res.errors)
            outcome[Path(f).name] = "ok" if res.volumes else res.errors[0].reason
    assert loaded > 40 and failed > 20, (loaded, failed)
    # greyscale images in many encodings load...
    present = 0
    for name in ("CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm",
                 "MR_small_jpeg_ls_lossless.dcm", "JPEG2000.dcm", "MR_small_bigendian.dcm",
                 "MR_small_implicit.dcm", "emri_small_big_endian.dcm"):
        if name in outcome:  # some are download-only in newer pydicom releases
            present += 1
            assert outcome[name] == "ok", (name, outcome[name])
    assert present >= 4
    # ...colour images load as luminance (with a warning), non-images are refused
    assert outcome["examples_rgb_color.dcm"] == "ok"
    (rgb,) = load_path(next(f for f in files if f.endswith("examples_rgb_color.dcm"))).volumes
    assert any("luminance" in w for w in rgb.warnings) and rgb.hu.shape == (1, 240, 320)
    assert "no image" in outcome["rtplan.dcm"]
    assert "truncated or corrupt" in outcome["MR_truncated.dcm"]
    assert time.perf_counter() - t0 < 60


def test_known_ct_file_values():
    (ct,) = [f for f in get_testdata_files("CT_small.dcm")]
    import pydicom
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(ct)
    (vol,) = load_path(ct).volumes
    np.testing.assert_array_equal(vol.hu[0], apply_modality_lut(ds.pixel_array, ds))
    np.testing.assert_array_equal(read_slice_hu(ct), vol.hu[0])
    assert vol.spacing[1:] == pytest.approx(tuple(float(v) for v in ds.PixelSpacing))


def test_mixed_folder_loads_each_series_and_reports_bad_files(tmp_path):
    stored = np.arange(3 * 4 * 4, dtype=np.int16).reshape(3, 4, 4)
    ct_series(tmp_path, stored, series_uid="1.2.3.1", prefix="a")
    bad = ct_series(tmp_path, stored, series_uid="1.2.3.2", prefix="b")
    bad[1].write_bytes(bad[1].read_bytes()[:-20])  # one truncated slice: its series has a gap
    (tmp_path / "readme.txt").write_text("hello")
    res = load_path(tmp_path)
    full, gapped = sorted(res.volumes, key=lambda v: -v.n_slices)
    np.testing.assert_array_equal(full.hu, stored - 1024.0)
    np.testing.assert_array_equal(gapped.hu, stored[[0, 2]] - 1024.0)
    assert [e.path for e in res.errors] == [str(bad[1])]
    assert "truncated or corrupt" in res.errors[0].reason


@pytest.mark.parametrize("kind", ["empty", "text", "missing", "fifo", "empty_dir"])
def test_bad_input_gives_no_volume_and_a_clear_error(tmp_path, kind):
    target = tmp_path / "x.dcm"
    if kind == "empty":
        target.write_bytes(b"")
    elif kind == "text":
        target.write_text("patient list\n" * 10)
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "empty_dir":
        target.mkdir()
    if kind in ("missing", "fifo"):
        with pytest.raises(LoadError, match="x.dcm"):
            load_path(target)
        return
    res = load_path(target)
    assert res.volumes == []
    if kind == "empty_dir":
        assert res.errors == []
    else:
        assert [e.path for e in res.errors] == [str(target)]


def test_load_series_with_no_files():
    with pytest.raises(LoadError, match="no files"):
        load_series([])
