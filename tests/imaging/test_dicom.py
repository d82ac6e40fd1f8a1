"""load_series / read_slice_hu: HU maths, ordering, spacing, padding, warnings, codecs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from tests.imaging.dcmfactory import ImplicitVRLittleEndian, ct_series, ct_slice, enhanced_ct
from vitdesk.errors import Cancelled, LoadError
from vitdesk.imaging.dicom import load_series, read_slice_hu
from vitdesk.imaging.scan import scan_path
from vitdesk.jobs import CancelToken, Progress


def _stored(n: int = 5, rows: int = 12, cols: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 3000, size=(n, rows, cols)).astype(np.int16)


def _reference_hu(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return apply_modality_lut(ds.pixel_array, ds)


@pytest.mark.parametrize("via_scan", [True, False])
def test_hu_matches_pydicom_and_slices_sorted_by_position(tmp_path, via_scan):
    stored = _stored()
    paths = ct_series(tmp_path, stored, slope=1.5, intercept=-1000.0, dz=2.5)
    # Name order is shuffled: a loader sorting by name would fail below.
    assert [p.name for p in paths] != sorted(p.name for p in paths)
    src = scan_path(tmp_path).series[0] if via_scan else sorted(tmp_path.iterdir())
    vol = load_series(src)
    assert vol.hu.dtype == np.float32 and vol.shape == (5, 12, 10)
    for k, p in enumerate(paths):
        np.testing.assert_array_equal(vol.hu[k], _reference_hu(p))
    np.testing.assert_allclose(vol.hu, stored * 1.5 - 1000.0)
    assert vol.source_files == [str(p) for p in paths]
    # z spacing from positions (2.5), not from SliceThickness (9.0 in the files)
    assert vol.spacing == pytest.approx((2.5, 0.7, 0.8))
    np.testing.assert_allclose(vol.slice_positions, 10.0 + 2.5 * np.arange(5))
    assert vol.origin == pytest.approx((-50.0, -60.0, 10.0))
    np.testing.assert_allclose(vol.direction, np.eye(3))
    assert vol.default_window == (400.0, 40.0)  # first of the multi-valued VOI tags
    assert vol.warnings == []
    assert not vol.invert_display
    assert vol.key and len(vol.key) == 12
    assert vol.meta["PatientSex"] == "F" and "PatientName" not in vol.meta
    assert vol.phi["PatientID"] == "PID-123456"


def test_descending_positions_and_oblique_normal(tmp_path):
    # Rows along y, columns along x: normal is -z, so larger z comes first.
    stored = _stored(4)
    paths = ct_series(tmp_path, stored, iop=(0, 1, 0, 1, 0, 0), dz=3.0)
    vol = load_series(scan_path(tmp_path).series[0])
    assert vol.source_files == [str(p) for p in reversed(paths)]
    assert vol.spacing[0] == pytest.approx(3.0)
    np.testing.assert_allclose(vol.direction[:, 2], [0, 0, -1])


def test_padding_masked_and_set_to_minus_1024(tmp_path):
    stored = _stored(3)
    stored[:, 0, :] = -2000  # padding rows
    ct_series(tmp_path, stored, intercept=0.0, extra={"PixelPaddingValue": -2000})
    vol = load_series(scan_path(tmp_path).series[0])
    assert vol.padding is not None and vol.padding.shape == vol.hu.shape
    assert vol.padding[:, 0, :].all() and not vol.padding[:, 1:, :].any()
    assert (vol.hu[:, 0, :] == -1024).all()
    np.testing.assert_array_equal(vol.hu[:, 1:, :], stored[:, 1:, :])


def test_padding_range_limit(tmp_path):
    stored = np.full((2, 6, 6), 100, np.uint16)
    stored[:, 0, 0] = 0
    stored[:, 0, 1] = 5
    stored[:, 0, 2] = 6
    ct_series(tmp_path, stored, intercept=-1024.0,
              extra={"PixelPaddingValue": 0, "PixelPaddingRangeLimit": 5})
    vol = load_series(scan_path(tmp_path).series[0])
    assert vol.padding[:, 0, :2].all() and not vol.padding[:, 0, 2].any()
    assert vol.hu[0, 0, 2] == 6 - 1024 and vol.hu[0, 1, 1] == 100 - 1024


def test_monochrome1_sets_display_flag_only(tmp_path):
    stored = _stored(2)
    p = ct_series(tmp_path, stored, photometric="MONOCHROME1")
    vol = load_series(scan_path(tmp_path).series[0])
    assert vol.invert_display
    np.testing.assert_array_equal(vol.hu[0], _reference_hu(p[0]))


def test_unsigned_12_bit_ignores_unused_high_bits(tmp_path):
    rng = np.random.default_rng(1)
    clean = rng.integers(0, 4096, size=(2, 8, 8)).astype(np.uint16)
    dirty = clean | np.uint16(0xA000)  # overlay bits above Bits Stored
    ct_series(tmp_path, dirty, bits_stored=12, intercept=-1024.0)
    vol = load_series(scan_path(tmp_path).series[0])
    np.testing.assert_array_equal(vol.hu, clean.astype(np.float32) - 1024)


def test_signed_12_bit_sign_extended(tmp_path):
    vals = np.array([[-2048, -1, 0, 2047]], np.int16)
    raw = (vals.astype(np.uint16) & 0x0FFF).astype(np.int16)  # high nibble zero, as some writers do
    ct_series(tmp_path, raw[None], bits_stored=12, intercept=0.0)
    vol = load_series(scan_path(tmp_path).series[0])
    np.testing.assert_array_equal(vol.hu[0], vals)


def test_enhanced_multiframe_per_frame_position_and_rescale(tmp_path):
    stored = _stored(4, 6, 7)
    positions = [7.5, 0.0, 5.0, 2.5]  # frames stored out of order
    slopes, intercepts = [1.0, 2.0, 1.0, 0.5], [-1024.0, -1000.0, 0.0, 10.0]
    f = enhanced_ct(tmp_path / "mf.dcm", stored, positions, slopes, intercepts)
    scan = scan_path(tmp_path)
    assert scan.series[0].n_frames == 4
    vol = load_series(scan.series[0])
    order = np.argsort(positions)
    expected = np.stack([stored[i] * slopes[i] + intercepts[i] for i in order])
    np.testing.assert_allclose(vol.hu, expected)
    np.testing.assert_allclose(vol.slice_positions, [0, 2.5, 5, 7.5])
    assert vol.spacing == pytest.approx((2.5, 0.5, 0.6))
    assert vol.source_files == [str(f)] * 4


def test_single_slice_uses_slice_thickness(tmp_path):
    f = ct_slice(tmp_path / "one.dcm", _stored(1)[0])
    vol = load_series([f])
    assert vol.shape == (1, 12, 10) and vol.spacing[0] == pytest.approx(9.0)
    np.testing.assert_array_equal(read_slice_hu(f), vol.hu[0])
    np.testing.assert_array_equal(read_slice_hu(f), _reference_hu(f))


def test_duplicate_and_missing_slices_warn(tmp_path):
    stored = _stored(6)
    ct_series(tmp_path / "dup", stored, positions=[0, 2, 2, 4, 6, 8])
    vol = load_series(scan_path(tmp_path / "dup").series[0])
    assert any("duplicate" in w for w in vol.warnings), vol.warnings
    assert vol.spacing[0] == pytest.approx(2.0)

    ct_series(tmp_path / "gap", stored, positions=[0, 2, 4, 10, 12, 14])
    vol = load_series(scan_path(tmp_path / "gap").series[0])
    gap = [w for w in vol.warnings if "missing slices" in w]
    assert gap and "about 2 slice(s) missing" in gap[0], vol.warnings
    assert not any("duplicate" in w for w in vol.warnings)


def test_duplicate_slice_warning_names_slices_not_files(tmp_path):
    # a real export's folder often holds the patient's name: warnings reach reports
    folder = tmp_path / "DOE^JANE_MRN12345"
    ct_series(folder, _stored(4), positions=[0, 2, 2, 4], shuffle=None)  # instance = k + 1
    vol = load_series(scan_path(folder).series[0])
    (dup,) = [w for w in vol.warnings if "duplicate" in w]
    assert dup == ("1 duplicate slice position(s) (e.g. slices 2 and 3, instance numbers 2 "
                   "and 3): the series may hold two acquisitions")
    assert not any("DOE" in w or "MRN" in w or str(tmp_path) in w for w in vol.warnings)


def test_uneven_spacing_warns(tmp_path):
    ct_series(tmp_path, _stored(5), positions=[0, 2, 4.5, 6.5, 8.0])
    vol = load_series(scan_path(tmp_path).series[0])
    assert any("uneven" in w for w in vol.warnings), vol.warnings


def test_gantry_tilt_warns(tmp_path):
    # Positions step along y as well as z: stacking is 45 degrees off the normal.
    stored = _stored(3)
    for k in range(3):
        ct_slice(tmp_path / f"t{k}.dcm", stored[k], ipp=[0, 2.0 * k, 2.0 * k],
                 extra={"GantryDetectorTilt": 45.0})
    vol = load_series(scan_path(tmp_path).series[0])
    assert any("tilt" in w and "45.0" in w for w in vol.warnings), vol.warnings


def test_mixed_orientation_warns(tmp_path):
    stored = _stored(2)
    ct_slice(tmp_path / "a.dcm", stored[0], z=0)
    ct_slice(tmp_path / "b.dcm", stored[1], z=2, iop=(1, 0, 0, 0, 0.9998, 0.02))
    vol = load_series(scan_path(tmp_path).series[0])
    assert any("mixed slice orientations" in w for w in vol.warnings)


def test_odd_size_slice_is_skipped_with_its_reason(tmp_path):
    stored = _stored(3, 8, 8)
    for k in range(3):
        ct_slice(tmp_path / f"a{k}.dcm", stored[k], z=2.0 * k)
    odd = ct_slice(tmp_path / "b.dcm", _stored(1, 9, 8)[0], z=8)
    vol = load_series(scan_path(tmp_path).series[0])
    np.testing.assert_array_equal(vol.hu, stored.astype(np.float32) - 1024)
    assert [e.path for e in vol.skipped] == [str(odd)]
    assert "differs from the series' 8x8" in vol.skipped[0].reason
    assert any("left out" in w for w in vol.warnings)


def test_no_preamble_and_implicit_vr(tmp_path):
    stored = _stored(2)
    a = ct_slice(tmp_path / "raw.dcm", stored[0], z=0, preamble=False)
    b = ct_slice(tmp_path / "impl.dcm", stored[1], z=1, ts=ImplicitVRLittleEndian)
    assert a.read_bytes()[128:132] != b"DICM"
    vol = load_series(scan_path(tmp_path).series[0])
    np.testing.assert_array_equal(vol.hu, stored.astype(np.float32) - 1024)
    assert vol.source_files == [str(a), str(b)]


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_compressed_series_match_uncompressed(tmp_path, syntax):
    stored = _stored(3, 32, 32)  # J2K needs >= 32 px for its default levels
    ct_series(tmp_path / "c", stored, compress=syntax)
    ds = pydicom.dcmread(next((tmp_path / "c").iterdir()))
    assert ds.file_meta.TransferSyntaxUID == syntax
    vol = load_series(scan_path(tmp_path / "c").series[0])
    np.testing.assert_array_equal(vol.hu, stored.astype(np.float32) - 1024)


def test_corrupt_compressed_data_names_file_and_syntax(tmp_path):
    p = ct_slice(tmp_path / "bad.dcm", _stored(1, 32, 32)[0], compress=JPEG2000Lossless)
    ds = pydicom.dcmread(p)
    frag = bytearray(ds.PixelData)
    frag[40:200] = b"\x00" * 160  # wreck the codestream inside its fragment
    ds.PixelData = bytes(frag)
    ds.save_as(p)
    with pytest.raises(LoadError) as info:
        load_series([p])
    msg = str(info.value)
    assert str(p) in msg and "JPEG 2000" in msg and "\n" not in msg


def test_truncated_file_raises_load_error(tmp_path):
    p = ct_slice(tmp_path / "t.dcm", _stored(1, 32, 32)[0])
    data = p.read_bytes()
    p.write_bytes(data[:-500])
    res = scan_path(tmp_path)  # the scan checks the header's claims against the file size
    assert res.series == [] and [e.path for e in res.errors] == [str(p)]
    assert "truncated" in res.errors[0].reason
    with pytest.raises(LoadError, match="t.dcm"):
        load_series([p])


def test_file_truncated_after_scan(tmp_path):
    ct_series(tmp_path, _stored(3, 32, 32))
    series = scan_path(tmp_path).series[0]
    victim = Path(series.files[1])
    victim.write_bytes(victim.read_bytes()[:-100])
    vol = load_series(series)  # the other slices still load; the victim is listed
    assert vol.n_slices == 2 and str(victim) not in vol.source_files
    assert [e.path for e in vol.skipped] == [str(victim)]
    assert vol.skipped[0].reason.startswith("pixel data ends early")


def test_progress_and_cancel(tmp_path):
    ct_series(tmp_path, _stored(20, 4, 4))
    series = scan_path(tmp_path).series[0]
    events = []
    load_series(series, listener=events.append)
    loads = [e for e in events if isinstance(e, Progress) and e.task == "load"]
    assert loads[-1].done == loads[-1].total == 20
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        load_series(series, cancel=token)


def test_missing_codec_message_says_what_to_do(tmp_path):
    p = ct_slice(tmp_path / "mpeg.dcm", _stored(1, 8, 8)[0], compress=RLELossless)
    ds = pydicom.dcmread(p)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder exists
    ds.save_as(p)
    with pytest.raises(LoadError) as info:
        read_slice_hu(p)
    msg = str(info.value)
    assert str(p) in msg and "MPEG2" in msg and "convert" in msg


def test_legacy_multiframe_stacks_frames_along_normal(tmp_path):
    stored = _stored(3, 4, 4)
    p = ct_slice(tmp_path / "mf.dcm", stored[0], z=5.0,
                 extra={"NumberOfFrames": 3, "SpacingBetweenSlices": 2.0,
                        "PixelData": stored.astype("<i2").tobytes()})
    vol = load_series([p])
    np.testing.assert_array_equal(vol.hu, stored.astype(np.float32) - 1024)
    np.testing.assert_allclose(vol.slice_positions, [5.0, 7.0, 9.0])
    assert vol.spacing[0] == pytest.approx(2.0) and vol.warnings == []
