"""The synthetic sample: CT-like HU, a visible lesion where labelled, determinism."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from vitdesk.errors import Cancelled, DataError
from vitdesk.imaging.synthetic import (
    README_MARKER,
    SCANNERS,
    generate_sample,
    render_case,
    sample_demographics,
    scanner_profile,
)
from vitdesk.jobs import CancelToken, Progress

LUNG, LIVER = 2, 3


def _read_labels(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def test_tissue_hu_ranges():
    case = render_case(seed=3, index=0, sex="M", age=50, positive=False, slices=12, size=96)
    hu, tissue = case.hu, case.tissue
    assert case.labels == ["normal"] * 12 and case.lesions == []
    lung = hu[tissue == LUNG]
    assert lung.size > 2000
    assert -880 < float(lung.mean()) < -780  # parenchyma ~ -850 plus vessels
    liver = hu[tissue == LIVER]
    assert liver.size > 500
    assert 45 < float(np.median(liver)) < 80
    corner = hu[:, :6, :6]
    assert -1024 <= float(corner.mean()) < -960  # air outside the patient
    for k in range(12):
        assert (hu[k] > 300).sum() * case.px_mm**2 > 300  # spine (+ ribs) on every slice
        body = hu[k][tissue[k] > 0]
        assert ((body > -130) & (body < -70)).mean() > 0.03  # subcutaneous fat
    chest = hu[: 12 // 2]
    assert (chest > 200).sum() > 0 and (chest < -950).sum() > 0  # contrast aorta, airway
    assert 8 < float(np.std(hu[0, :6, :])) < 25  # noise in air of 10-18 HU (clipped)


def _lesion_case(size: int = 96, slices: int = 12):
    for index in range(40):
        pos = render_case(0, index, "F", 60, True, slices=slices, size=size)
        if {les.kind for les in pos.lesions} == {"lung", "liver"}:
            neg = render_case(0, index, "F", 60, False, slices=slices, size=size)
            return pos, neg
    raise AssertionError("no patient with lung and liver lesions in 40 patients")


def test_lesions_only_on_labelled_slices_and_inside_their_discs():
    pos, neg = _lesion_case()
    labelled = [k for k, lab in enumerate(pos.labels) if lab == "lesion"]
    spans = {}
    for les in pos.lesions:  # one slice range per organ, shared by its lesions
        assert spans.setdefault(les.kind, (les.first, les.last)) == (les.first, les.last)
    covered = sorted({k for a, b in spans.values() for k in range(a, b + 1)})
    assert labelled == covered
    assert all(b - a + 1 >= 3 for a, b in spans.values())
    assert spans["lung"][0] < spans["liver"][0]  # lungs above the liver
    assert neg.labels == ["normal"] * len(neg.labels) and neg.lesions == []
    diff = pos.hu - neg.hu
    size = pos.hu.shape[1]
    coord = (np.arange(size) - (size - 1) / 2.0) * pos.px_mm
    dists = [np.hypot(coord[None, :] - les.x, coord[:, None] - les.y) for les in pos.lesions]
    outside = np.all([d > les.radius + 2 * pos.px_mm
                      for d, les in zip(dists, pos.lesions, strict=True)], axis=0)
    for k in range(len(pos.labels)):
        if k in labelled:
            for d, les in zip(dists, pos.lesions, strict=True):
                if not les.first <= k <= les.last:
                    continue
                core = d < les.radius * 0.5  # always inside: drawn radius >= 0.6 r
                assert core.sum() >= 2  # several pixels at 96 px, not a speck
                change = float(diff[k][core].mean())
                if les.kind == "lung":
                    assert change > 500  # solid nodule (~40 HU) in lung (~-850 HU)
                else:
                    assert change < -50  # clearly hypodense lesion in liver (~60 HU)
            assert np.abs(diff[k][outside]).max() == 0
        else:
            assert np.abs(diff[k]).max() == 0


def test_lesion_slices_are_not_tied_to_one_anatomical_level():
    # the shortcut the demo found: lesions only on lung levels. Now each level of a
    # positive patient is about as likely to carry a lesion in the upper (chest) as in
    # the lower (abdominal) half of the series.
    sexes, ages, positive = sample_demographics(16, seed=2)
    hits = np.zeros(12)
    for i in sorted(positive):
        case = render_case(2, i, sexes[i], ages[i], True, slices=12, size=48, noise=False)
        hits += np.array([lab == "lesion" for lab in case.labels])
    upper, lower = hits[:6].sum(), hits[6:].sum()
    assert upper > 0 and lower > 0
    assert 0.6 < upper / lower < 1.6


def test_demographics_balanced_and_age_dependent():
    sexes, ages, positive = sample_demographics(200, seed=1)
    assert sexes.count("M") == sexes.count("F") == 100
    assert min(ages) >= 25 and max(ages) <= 85
    assert len(positive) == 100
    old = [i for i, a in enumerate(ages) if a >= 60]
    young = [i for i, a in enumerate(ages) if a < 45]
    frac = lambda idx: sum(i in positive for i in idx) / len(idx)  # noqa: E731
    assert frac(old) > frac(young)


def test_sample_files_labels_and_phi(tmp_path):
    events = []
    info = generate_sample(tmp_path / "s", patients=6, slices=8, size=48, seed=5,
                           listener=events.append)
    rows = _read_labels(info.labels_csv)
    on_disk = sorted(p.relative_to(info.out_dir).as_posix()
                     for p in info.out_dir.rglob("*.dcm"))
    assert sorted(r["path"] for r in rows) == on_disk
    assert len(rows) == info.n_slices_total == 48
    assert {r["label"] for r in rows} <= set(info.classes) == {"normal", "lesion"}
    assert sum(r["label"] == "lesion" for r in rows) == info.n_positive_slices > 0
    assert "SYNTHETIC" in (info.out_dir / "README.txt").read_text()
    assert README_MARKER in (info.out_dir / "README.txt").read_text()
    assert isinstance(events[-1], Progress) and events[-1].done == events[-1].total == 6

    cases: dict[str, list[str]] = {}
    for r in rows:
        cases.setdefault(r["path"].split("/")[0], []).append(r["label"])
    assert sorted(cases) == [f"case_{i:03d}" for i in range(1, 7)]
    positives = [c for c, labs in cases.items() if "lesion" in labs]
    assert len(positives) == 3
    for labs in cases.values():  # at most two runs of lesion slices (lung, liver) each
        runs = sum(lab == "lesion" and (k == 0 or labs[k - 1] != "lesion")
                   for k, lab in enumerate(labs))
        assert runs <= 2 and (runs > 0) == ("lesion" in labs)

    sexes = []
    for case in cases:
        files = sorted((info.out_dir / case / "series_1").glob("*.dcm"))
        datasets = [pydicom.dcmread(f) for f in files]
        ds = datasets[0]
        sexes.append(ds.PatientSex)
        assert ds.PatientAge.endswith("Y") and 25 <= int(ds.PatientAge[:3]) <= 85
        for secret in (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate):
            assert secret and all(secret not in r["path"] for r in rows)
        z = [float(d.ImagePositionPatient[2]) for d in datasets]
        assert z == sorted(z) and len(set(z)) == len(z)
        assert len({d.SeriesInstanceUID for d in datasets}) == 1
        hu = apply_modality_lut(datasets[3].pixel_array, datasets[3])
        assert hu.shape == (48, 48) and hu.min() >= -1024 and hu.max() > 300
    assert sorted(sexes) == ["F", "F", "F", "M", "M", "M"]


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = generate_sample(tmp_path / "a", patients=2, slices=4, size=32, seed=11)
    b = generate_sample(tmp_path / "b", patients=2, slices=4, size=32, seed=11)
    c = generate_sample(tmp_path / "c", patients=2, slices=4, size=32, seed=12)
    assert a.labels_csv.read_bytes() == b.labels_csv.read_bytes()
    for row in _read_labels(a.labels_csv):
        fa, fb = a.out_dir / row["path"], b.out_dir / row["path"]
        assert fa.read_bytes() == fb.read_bytes()
    first = _read_labels(a.labels_csv)[0]["path"]
    pa = pydicom.dcmread(a.out_dir / first).PixelData
    pc = pydicom.dcmread(c.out_dir / first).PixelData
    assert pa != pc


def test_bad_output_folders(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(DataError, match="existing file"):
        generate_sample(f, patients=1, slices=1, size=16)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    with pytest.raises(DataError, match="not a vitdesk sample"):
        generate_sample(busy, patients=1, slices=1, size=16)
    assert (busy / "mine.txt").read_text() == "keep"


def test_regenerating_replaces_a_previous_sample(tmp_path):
    out = tmp_path / "s"
    generate_sample(out, patients=3, slices=2, size=16)
    info = generate_sample(out, patients=2, slices=2, size=16)
    assert sorted(p.name for p in out.glob("case_*")) == ["case_001", "case_002"]
    assert len(_read_labels(info.labels_csv)) == 4


def test_cancel_stops_generation(tmp_path):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        generate_sample(tmp_path / "s", patients=2, slices=2, size=16, cancel=token)


# Checksums of the default sample (no scanner profile) taken from the generator before
# scanner profiles existed: the default sample must stay byte for byte the same, so
# runs and benchmarks on it stay comparable.
_DEFAULT_HU_SHA256 = "e677e6496504579b8dbec88ce57aa6ccfd350a072956dc054551f8b62b129899"
_DEFAULT_FILES_SHA256 = "9a274ff86c6027b60a1897cefa42038dc89a40af51fb8d2d16820446c8bbdacc"


def test_default_sample_is_pinned(tmp_path):
    import hashlib

    sexes, ages, positive = sample_demographics(3, 5)
    h = hashlib.sha256()
    for i in range(3):
        case = render_case(5, i, sexes[i], ages[i], i in positive, slices=6, size=48)
        h.update(np.ascontiguousarray(case.hu, dtype=np.float32).tobytes())
    assert h.hexdigest() == _DEFAULT_HU_SHA256
    out = tmp_path / "s"
    generate_sample(out, patients=3, slices=6, size=48, seed=5)
    h = hashlib.sha256()
    for p in sorted(out.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(out).as_posix().encode())
            h.update(p.read_bytes())
    assert h.hexdigest() == _DEFAULT_FILES_SHA256


def _site_measures(scanner: str | None) -> dict[str, float]:
    """Noise SD (noisy minus noise-free, inside the body), liver median HU (eroded
    interior), edge sharpness (99th percentile of the noise-free gradient, HU/px) and
    noise texture (lag-1 autocorrelation of the noise) of one patient."""
    import cv2

    sc = None if scanner is None else SCANNERS[scanner]
    noisy = render_case(1, 0, "M", 50, False, slices=8, size=96, scanner=sc)
    clean = render_case(1, 0, "M", 50, False, slices=8, size=96, scanner=sc, noise=False)
    noise = noisy.hu - clean.hu
    body = noisy.tissue > 0
    kernel = np.ones((5, 5), np.uint8)
    liver = np.stack([cv2.erode((t == LIVER).astype(np.uint8), kernel) for t in noisy.tissue])
    grad = np.hypot(*np.gradient(clean.hu, axis=(1, 2)))
    centre = noise[:, 20:70, 20:70]
    return {
        "noise": float(noise[body].std()),
        "liver": float(np.median(noisy.hu[liver > 0])),
        "edge": float(np.percentile(grad[body], 99)),
        "texture": float(np.mean(centre[:, :, 1:] * centre[:, :, :-1]) / np.var(centre)),
        "px_mm": noisy.px_mm,
    }


def test_scanner_profiles_differ_measurably():
    a, b, c = (_site_measures(name) for name in "ABC")
    # noise level: B high, C low (profile ranges 22-28, 10-14, 6-9 HU)
    assert 20 < b["noise"] < 30 and 9 < a["noise"] < 15 and 5 < c["noise"] < 10
    # noise texture: C's smooth kernel correlates neighbours, B's sharp one does not
    assert c["texture"] > a["texture"] + 0.15 and b["texture"] < a["texture"] - 0.2
    # calibration offset on the same patient's liver: +25 HU on B, -20 HU on C
    assert b["liver"] - a["liver"] == pytest.approx(25.0, abs=5.0)
    assert c["liver"] - a["liver"] == pytest.approx(-20.0, abs=5.0)
    # kernel sharpness: sharp B overshoots edges, smooth C blurs them
    assert b["edge"] > 1.2 * a["edge"] and c["edge"] < 0.7 * a["edge"]
    # field of view: B reconstructs a wider FOV (bigger pixels), C a tighter one
    assert b["px_mm"] > a["px_mm"] > c["px_mm"]


def test_scanner_profiles_are_deterministic_and_keep_the_anatomy():
    b = SCANNERS["B"]
    one = render_case(2, 1, "F", 40, True, slices=6, size=48, scanner=b)
    two = render_case(2, 1, "F", 40, True, slices=6, size=48, scanner=b)
    assert np.array_equal(one.hu, two.hu) and one.labels == two.labels
    other_seed = render_case(3, 1, "F", 40, True, slices=6, size=48, scanner=b)
    assert not np.array_equal(one.hu, other_seed.hu)
    # profile A has the default geometry and no kernel: same anatomy, other noise
    default = render_case(2, 1, "F", 40, True, slices=6, size=48, noise=False)
    site_a = render_case(2, 1, "F", 40, True, slices=6, size=48, noise=False,
                         scanner=SCANNERS["A"])
    assert np.array_equal(default.hu, site_a.hu) and default.labels == site_a.labels


def test_scanner_profile_is_recorded_in_the_dicom(tmp_path):
    out = tmp_path / "siteC"
    info = generate_sample(out, patients=2, slices=3, size=32, seed=1, scanner="c")
    assert info.scanner == "C" and "scanner C" in info.describe()
    rows = _read_labels(info.labels_csv)
    ds = pydicom.dcmread(out / rows[0]["path"])
    assert ds.Manufacturer == "vitdesk synthetic"
    assert ds.ManufacturerModelName == "Synthetic CT C"
    assert ds.ConvolutionKernel == "SMOOTH"
    assert float(ds.SliceThickness) == 5.0
    assert "scanner profile: C" in (out / "README.txt").read_text()
    # the default sample keeps its original header
    plain = generate_sample(tmp_path / "plain", patients=1, slices=2, size=32, seed=1)
    ds0 = pydicom.dcmread(tmp_path / "plain" / _read_labels(plain.labels_csv)[0]["path"])
    assert ds0.ConvolutionKernel == "STANDARD" and "ManufacturerModelName" not in ds0


def test_unknown_scanner_is_a_data_error_before_writing(tmp_path):
    with pytest.raises(DataError, match="unknown scanner profile 'Z'.*A, B, C"):
        generate_sample(tmp_path / "s", patients=1, slices=1, size=16, scanner="Z")
    assert not (tmp_path / "s").exists()
    assert scanner_profile(" b ").name == "B"
