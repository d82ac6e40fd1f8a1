"""Preprocessing values, geometry inverse, cache, augmentation through the dataset."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vitdesk.data.augment import AugmentConfig, sample_rng
from vitdesk.data.dataset import (
    Letterbox,
    SliceDataset,
    crop_box,
    letterbox_resize,
    preprocess_slice,
    read_dicom_hu,
    to_slice,
)
from vitdesk.data.records import SliceRecord
from vitdesk.data.sources import load_records
from vitdesk.errors import DataError, LoadError
from vitdesk.imaging.windowing import WindowSpec

LUNG = WindowSpec.parse("lung")  # W 1500, L -600: [-1350, 150] -> [0, 1]


def test_known_hu_maps_to_expected_normalised_value():
    hu = np.array([[-600.0, 150.0], [-975.0, -2000.0]], np.float32)
    x = preprocess_slice(hu, "dicom", LUNG, 2, mean=(0.5,) * 3, std=(0.25,) * 3, channels=3)
    assert x.shape == (3, 2, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], [[0.0, 2.0], [-1.0, -2.0]], atol=1e-6)
    np.testing.assert_array_equal(x[0], x[2])  # one window replicated


def test_three_window_stack_fills_channels():
    spec = WindowSpec.parse("brain,subdural,bone")
    x = preprocess_slice(np.full((4, 4), 40.0, np.float32), "dicom", spec, 4, (0, 0, 0),
                         (1, 1, 1))
    # 40 HU: brain level (0.5), subdural (40-(-25))/200 = 0.325, bone (40+500)/1800 = 0.3
    np.testing.assert_allclose(x[:, 0, 0], [0.5, 0.325, 0.3], atol=1e-6)


def test_greyscale_png_replicated_to_three_channels(png_folder):
    path = str(png_folder / "b" / "img11.png")  # 12x20 of value 140
    ds = SliceDataset([SliceRecord(path, label="b", kind="image")], ["a", "b"], LUNG, 20,
                      mean=(0, 0, 0), std=(1, 1, 1))
    x, y = ds[0]
    assert y == 1 and tuple(x.shape) == (3, 20, 20)
    np.testing.assert_allclose(x[:, 10, 10].numpy(), [140 / 255] * 3, atol=1e-3)
    # 12 rows padded to 20: 4 black rows above and below
    assert float(x[:, :4].abs().max()) == 0.0 and float(x[:, 16:].abs().max()) == 0.0


def test_letterbox_geometry_and_inverse():
    box = Letterbox(height=50, width=100, size=32)
    assert (box.pad_top, box.pad_left, box.scale) == (25, 0, 0.32)
    assert crop_box(50, 100, 32) == pytest.approx((8.0, 0.0, 24.0, 32.0))
    # A bright square in the slice stays at the same place after the round trip.
    img = np.zeros((50, 100), np.float32)
    img[10:40, 60:90] = 1.0
    model_in = letterbox_resize(img[None], 32)[0]
    back = to_slice(model_in, 50, 100, 32)
    assert back.shape == (50, 100)
    assert back[25, 75] > 0.9 and back[25, 20] < 0.1 and back[5, 75] < 0.1


def test_resize_uses_area_for_downscale():
    img = np.zeros((1, 8, 8), np.float32)
    img[0, ::2, ::2] = 1.0  # checkerboard-like: area average is exactly 0.25
    out = letterbox_resize(img, 4)
    np.testing.assert_allclose(out, 0.25, atol=1e-6)
    ref = cv2.resize(img[0], (4, 4), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(out[0], ref)


def test_dataset_matches_preprocess_and_reads_each_file_once(dicom_folder):
    recs = load_records(dicom_folder)
    ds = SliceDataset(recs, ["lesion", "normal"], LUNG, 8, (0.5,) * 3, (0.5,) * 3)
    first = [ds[i][0] for i in range(len(ds))]
    assert ds.n_reads == len(recs)
    second = [ds[i][0] for i in range(len(ds))]
    assert ds.n_reads == len(recs)  # epoch 2 served from the cache
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b)
    hu = read_dicom_hu(recs[4].path)
    ref = preprocess_slice(hu, "dicom", LUNG, 8, (0.5,) * 3, (0.5,) * 3)
    np.testing.assert_allclose(first[4].numpy(), ref, atol=2e-3)  # float16 cache
    nocache = SliceDataset(recs, ["lesion", "normal"], LUNG, 8, (0.5,) * 3, (0.5,) * 3,
                           cache=False)
    for i in range(len(nocache)):
        nocache[i]
    nocache[0]
    assert nocache.n_reads == len(recs) + 1


def test_cache_is_bounded(dicom_folder):
    recs = load_records(dicom_folder)
    ds = SliceDataset(recs, ["lesion", "normal"], LUNG, 16, (0.5,) * 3, (0.5,) * 3,
                      cache_mb=3 * 16 * 16 * 2 * 4 / 2**20)  # room for 4 samples
    for i in range(len(ds)):
        ds[i]
    assert len(ds.cache) == 4 and ds.cache.nbytes <= ds.cache.max_bytes


def test_augmented_samples_deterministic_per_seed_and_vary_by_epoch(dicom_folder):
    recs = load_records(dicom_folder)
    aug = AugmentConfig(rotate_deg=15, translate=0.1, hu_shift=50, seed=3)
    ds = SliceDataset(recs, ["lesion", "normal"], LUNG, 16, (0.5,) * 3, (0.5,) * 3,
                      augment=aug)
    a0 = ds[(2, 0)][0]
    again = SliceDataset(recs, ["lesion", "normal"], LUNG, 16, (0.5,) * 3, (0.5,) * 3,
                         augment=aug)[(2, 0)][0]
    torch.testing.assert_close(a0, again)
    assert not torch.allclose(a0, ds[(2, 1)][0])
    ds.set_epoch(1)
    torch.testing.assert_close(ds[2][0], ds[(2, 1)][0])
    assert ds.n_reads == 1  # HU source cached even while augmenting


def test_hu_jitter_acts_before_windowing(dicom_folder):
    recs = load_records(dicom_folder)
    rec = recs[0]  # constant 0 HU slice
    spec = WindowSpec.parse("100/0")  # narrow: a HU shift moves the windowed value
    aug = dataclasses.replace(AugmentConfig.off(), hu_shift=40.0, seed=11)
    ds = SliceDataset([rec], ["lesion", "normal"], spec, 16, (0, 0, 0), (1, 1, 1), augment=aug)
    x = ds[(0, 5)][0].numpy()
    shift = sample_rng(11, 5, 0).uniform(-40, 40)
    hu = read_dicom_hu(rec.path)
    assert float(hu.mean()) == 0.0
    expected = np.clip((0.0 + shift + 50.0) / 100.0, 0, 1)
    np.testing.assert_allclose(x[:, 8, 8], expected, atol=1e-5)
    assert abs(expected - 0.5) > 1e-3


def test_unknown_label_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="label\\(s\\) c are not among"):
        SliceDataset([SliceRecord("/x.png", label="c", kind="image")], ["a", "b"], LUNG, 8)
    ds = SliceDataset([SliceRecord(str(tmp_path / "gone.png"), label="a", kind="image")],
                      ["a", "b"], LUNG, 8)
    with pytest.raises(DataError, match="gone.png: file missing"):
        ds[0]


# ---------------------------------------------------------------- one reader (issue 11)

_SHARED_ECT = Path(__file__).resolve().parents[2] / ".." / "shared" / "dicom" / "pydicom-data" \
    / "eCT_Supplemental.dcm"


def test_enhanced_ct_training_path_reads_the_viewers_hu(tmp_path):
    from tests.imaging.dcmfactory import enhanced_ct
    from vitdesk.data.dataset import read_record
    from vitdesk.imaging.dicom import load_series

    stored = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5) * 7
    positions = [0.0, 2.5, 5.0]  # frame order = slice order
    slopes, intercepts = [1.0, 2.0, 0.5], [-1024.0, -1000.0, 10.0]
    f = enhanced_ct(tmp_path / "mf.dcm", stored, positions, slopes, intercepts)
    vol = load_series([f])
    for i in range(3):
        expected = stored[i] * slopes[i] + intercepts[i]
        hu = read_record(SliceRecord(str(f), frame=i, label="a"))
        np.testing.assert_array_equal(hu, expected.astype(np.float32))  # not stored values
        np.testing.assert_array_equal(hu, vol.hu[i])
    with pytest.raises(LoadError, match="frame 3"):
        read_dicom_hu(str(f), 3)


def test_padding_is_masked_in_the_training_path(tmp_path):
    from tests.imaging.dcmfactory import ct_slice

    stored = np.full((4, 4), 1000, np.int16)
    stored[0] = -2000
    f = ct_slice(tmp_path / "p.dcm", stored, extra={"PixelPaddingValue": -2000})
    hu = read_dicom_hu(str(f))
    assert (hu[0] == -1024).all() and (hu[1:] == 1000 - 1024).all()


@pytest.mark.skipif(not _SHARED_ECT.is_file(), reason="shared pydicom-data not present")
def test_shared_enhanced_ct_file_same_hu_as_viewer():
    from vitdesk.imaging.dicom import load_series

    path = _SHARED_ECT.resolve()
    vol = load_series([path])
    # the viewer's first slice (file frame 1: slices are sorted by position) is
    # -1024..148 HU; stored values are 0..1196, which the old training path returned
    assert (float(vol.hu[0].min()), float(vol.hu[0].max())) == (-1024.0, 148.0)
    frame0 = read_dicom_hu(str(path), 0)
    assert (float(frame0.min()), float(frame0.max())) == (-1024.0, 172.0)
    n = len(vol.source_files)
    assert n == 2
    training = [read_dicom_hu(str(path), i) for i in range(n)]
    # every frame read for training is one of the viewer's slices, each used once
    matches = [[k for k in range(n) if np.array_equal(hu, vol.hu[k])] for hu in training]
    assert sorted(m[0] for m in matches) == [0, 1] and all(len(m) == 1 for m in matches)
