"""Seeded fuzzing of the DICOM readers with mutated real files.

Every mutant of a real file (pydicom's shipped CT/MR files, synthetic Enhanced CT
and Modality LUT files, and ``../shared/dicom/pydicom-data`` when present) must
either load or give a one-line per-file reason naming the file, through the three
doors a file comes in by: ``load_path`` (scan + load: viewer, inspect, predict,
workspace import), ``read_frame_hu`` (training, evaluation) and
``data.sources.read_header`` (dataset building). Never a traceback, never more
than 5 s per file, and no allocation from a header's claims before they are
checked against the file size.

``VITDESK_FUZZ_N=1000`` runs 1,000 mutants (default: a fast subset of 100);
``VITDESK_FUZZ_SEED`` changes the seed. A failure names the mutant's source file,
mutation and seed so it can be replayed with :func:`mutate`.
"""

from __future__ import annotations

import os
import resource
import time
import tracemalloc
import warnings
from collections import Counter
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.imaging.dcmfactory import ct_slice, enhanced_ct
from vitdesk.errors import DataError, LoadError
from vitdesk.imaging.dicom import read_frame_hu
from vitdesk.imaging.io import load_path

N_DEFAULT = 100
MAX_SECONDS = 5.0
# No mutant may make the process trace more than this (the largest source file
# decodes to ~2 MB of pixels; a header claiming gigabytes must be refused first).
MAX_TRACED_BYTES = 256 * 2**20
SHIPPED = ("CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm",
           "JPEG2000.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm")
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "dicom" / "pydicom-data"
SHARED_FILES = ("eCT_Supplemental.dcm", "mlut_18.dcm", "liver.dcm", "emri_small.dcm",
                "emri_small_RLE.dcm", "vlut_04.dcm")

TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.1.99", "1.2.3.4.5.6",
)
REQUIRED = ("Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation",
            "SamplesPerPixel", "PhotometricInterpretation", "PixelData", "RescaleSlope",
            "RescaleIntercept", "NumberOfFrames", "SeriesInstanceUID", "ImagePositionPatient",
            "ImageOrientationPatient", "PixelSpacing", "HighBit")
VRS = (b"US", b"SS", b"UL", b"OB", b"OW", b"SQ", b"DS", b"IS", b"CS", b"UN", b"LO", b"FD")


# ---------------------------------------------------------------- sources


def source_files(tmp: Path) -> list[Path]:
    """Real files to mutate: shipped, synthetic, and shared ones when present."""
    local = {Path(f).name: Path(f) for f in get_testdata_files() if os.path.isfile(f)}
    files = [local[n] for n in SHIPPED if n in local]
    stored = (np.arange(4 * 16 * 16, dtype=np.int16).reshape(4, 16, 16) % 700) - 100
    files.append(enhanced_ct(tmp / "enhanced.dcm", stored, [0, 2.5, 5, 7.5],
                             [1, 2, 1, 0.5], [-1024, -1000, 0, 10]))
    lut = Dataset()
    lut.LUTDescriptor = [256, 0, 16]
    lut.add_new(0x00283006, "US", list(range(0, 2048, 8)))
    files.append(ct_slice(tmp / "lut.dcm", (stored[0] % 256).astype(np.int16),
                          extra={"ModalityLUTSequence": Sequence([lut]),
                                 "PixelPaddingValue": 0}))
    files += [SHARED / n for n in SHARED_FILES if (SHARED / n).is_file()]
    return files


# ---------------------------------------------------------------- mutations
# Each takes (data, rng) and returns the mutant's bytes; structural ones go
# through pydicom and fall back to a byte mutation when pydicom cannot write.


def _truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(0, len(data)))]


def _pixel_bits(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    start = len(buf) // 2  # pixel data sits at the end of these files
    for _ in range(int(rng.integers(1, 64))):
        i = int(rng.integers(start, len(buf)))
        buf[i] ^= 1 << int(rng.integers(0, 8))
    return bytes(buf)


def _header_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    end = min(len(buf), 2048)
    for _ in range(int(rng.integers(1, 8))):
        buf[int(rng.integers(0, end))] = int(rng.integers(0, 256))
    return bytes(buf)


def _vr_positions(data: bytes) -> list[int]:
    """Offsets of explicit VRs (two capitals after a 4-byte tag) in the header."""
    head = data[: min(len(data), 4096)]
    return [i for i in range(4, len(head) - 2)
            if 65 <= head[i] <= 90 and 65 <= head[i + 1] <= 90 and head[i - 3] in (0, 0x10, 0x20,
                                                                                    0x28, 0x30)]


def _wrong_vr(data: bytes, rng: np.random.Generator) -> bytes:
    pos = _vr_positions(data)
    if not pos:
        return _header_bytes(data, rng)
    buf = bytearray(data)
    i = pos[int(rng.integers(0, len(pos)))]
    buf[i:i + 2] = VRS[int(rng.integers(0, len(VRS)))]
    return bytes(buf)


def _unknown_vr(data: bytes, rng: np.random.Generator) -> bytes:
    pos = _vr_positions(data)
    if not pos:
        return _header_bytes(data, rng)
    buf = bytearray(data)
    i = pos[int(rng.integers(0, len(pos)))]
    buf[i:i + 2] = (b"ZZ", b"??", b"\x00\x00", b"xx")[int(rng.integers(0, 4))]
    return bytes(buf)


def _wrong_length(data: bytes, rng: np.random.Generator) -> bytes:
    pos = _vr_positions(data)
    if not pos:
        return _header_bytes(data, rng)
    buf = bytearray(data)
    i = pos[int(rng.integers(0, len(pos)))]
    value = int(rng.choice([0, 1, 3, 0xFFFF, int(rng.integers(0, 0x10000))]))
    buf[i + 2:i + 4] = value.to_bytes(2, "little")
    return bytes(buf)


def _group_length(data: bytes, rng: np.random.Generator) -> bytes:
    i = data.find(b"\x02\x00\x00\x00UL\x04\x00")
    if i < 0:
        return _header_bytes(data, rng)
    buf = bytearray(data)
    value = int(rng.choice([0, 1, 5, 0xFFFFFFFF, len(data) * 2, int(rng.integers(0, 400))]))
    buf[i + 8:i + 12] = value.to_bytes(4, "little")
    return bytes(buf)


def _via_pydicom(change: Callable[[Dataset, np.random.Generator], None]
                 ) -> Callable[[bytes, np.random.Generator], bytes]:
    def mutate_ds(data: bytes, rng: np.random.Generator) -> bytes:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(BytesIO(data), force=True)
                change(ds, rng)
                out = BytesIO()
                ds.save_as(out)
            return out.getvalue()
        except Exception:  # noqa: BLE001 - pydicom would not write it: mutate bytes instead
            return _header_bytes(data, rng)

    mutate_ds.__name__ = change.__name__
    return mutate_ds


def _missing_tag(ds: Dataset, rng: np.random.Generator) -> None:
    name = REQUIRED[int(rng.integers(0, len(REQUIRED)))]
    if name in ds:
        delattr(ds, name)


def _empty_tag(ds: Dataset, rng: np.random.Generator) -> None:
    name = REQUIRED[int(rng.integers(0, len(REQUIRED)))]
    if name in ds:
        ds[name].value = None if name != "PixelData" else b""


def _broken_lut(ds: Dataset, rng: np.random.Generator) -> None:
    item = Dataset()
    kind = int(rng.integers(0, 5))
    if kind != 0:
        item.LUTDescriptor = [[4096, 0, 16], [0, -1024, 16], [10, 0], [70000, 5, 12],
                              [256, 0, 16]][kind]
    if kind != 1:
        item.add_new(0x00283006, "US", [int(v) for v in rng.integers(0, 4096, 16)])
    ds.ModalityLUTSequence = Sequence([item] if kind != 4 else [])


def _wrong_syntax(ds: Dataset, rng: np.random.Generator) -> None:
    ds.file_meta.TransferSyntaxUID = TRANSFER_SYNTAXES[int(rng.integers(0, len(TRANSFER_SYNTAXES)))]


def _huge(ds: Dataset, rng: np.random.Generator) -> None:
    which = int(rng.integers(0, 4))
    if which == 0:
        ds.Rows = 65535
    elif which == 1:
        ds.Columns = 65535
    elif which == 2:
        ds.NumberOfFrames = int(rng.choice([10**6, 2**31 - 1, 0, -3]))
    else:
        ds.Rows, ds.Columns, ds.BitsAllocated = 65535, 65535, 32


def _broken_groups(ds: Dataset, rng: np.random.Generator) -> None:
    """Functional groups with missing or empty items (enhanced CT)."""
    seq = Sequence([Dataset() for _ in range(int(rng.integers(0, 3)))])
    if rng.random() < 0.5:
        ds.PerFrameFunctionalGroupsSequence = seq
    else:
        ds.SharedFunctionalGroupsSequence = seq


MUTATIONS: dict[str, Callable[[bytes, np.random.Generator], bytes]] = {
    "truncate": _truncate,
    "pixel_bits": _pixel_bits,
    "header_bytes": _header_bytes,
    "wrong_vr": _wrong_vr,
    "unknown_vr": _unknown_vr,
    "wrong_length": _wrong_length,
    "group_length": _group_length,
    "missing_tag": _via_pydicom(_missing_tag),
    "empty_tag": _via_pydicom(_empty_tag),
    "broken_lut": _via_pydicom(_broken_lut),
    "wrong_syntax": _via_pydicom(_wrong_syntax),
    "huge_dims": _via_pydicom(_huge),
    "broken_groups": _via_pydicom(_broken_groups),
}


def mutate(data: bytes, kind: str, seed: int) -> bytes:
    """The mutant ``kind`` of ``data`` for ``seed`` (replays a failing case)."""
    return MUTATIONS[kind](data, np.random.default_rng(seed))


# ---------------------------------------------------------------- the three doors


def _one_line_about(msg: str, path: Path) -> bool:
    return "\n" not in msg and str(path) in msg and "Traceback" not in msg


def exercise(path: Path) -> str:
    """Run one file through every reader; return "loaded" or "refused".

    Raises AssertionError (with the reason) for anything that is not a clean
    load or a clean one-line per-file reason.
    """
    from vitdesk.data.sources import read_header

    res = load_path(path)
    for err in res.errors:
        assert err.path == str(path) and err.reason and "\n" not in err.reason, err
    for vol in res.volumes:
        assert vol.hu.ndim == 3 and vol.hu.dtype == np.float32 and vol.hu.size > 0
    assert res.volumes or res.errors or res.n_files == 1  # a non-DICOM file is skipped
    try:
        hu = read_frame_hu(path, 0)
        assert hu.ndim == 2 and hu.dtype == np.float32
    except LoadError as exc:
        assert _one_line_about(str(exc), path), str(exc)
    try:
        read_header(path)
    except DataError as exc:
        assert _one_line_about(str(exc), path), str(exc)
    return "loaded" if res.volumes else "refused"


def _fuzz_n() -> int:
    return int(os.environ.get("VITDESK_FUZZ_N", N_DEFAULT))


def test_sources_load_cleanly_before_mutation(tmp_path):
    files = source_files(tmp_path)
    assert len(files) >= 9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in files:
            assert exercise(f) == "loaded", f


def test_fuzzed_files_load_or_give_one_line_reasons(tmp_path, capsys):
    n = _fuzz_n()
    seed0 = int(os.environ.get("VITDESK_FUZZ_SEED", 0))
    files = source_files(tmp_path)
    blobs = [f.read_bytes() for f in files]
    kinds = sorted(MUTATIONS)
    rng = np.random.default_rng(seed0)
    outcomes: Counter = Counter()
    by_kind: dict[str, Counter] = {k: Counter() for k in kinds}
    failures: list[str] = []
    slowest = (0.0, "")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t_all = time.perf_counter()
    for i in range(n):
        src = int(rng.integers(0, len(files)))
        kind = kinds[i % len(kinds)]
        seed = int(rng.integers(0, 2**31))
        mutant = tmp_path / f"m{i:05d}.dcm"
        mutant.write_bytes(mutate(blobs[src], kind, seed))
        label = f"{files[src].name} {kind} seed={seed}"
        traced = kind in ("huge_dims", "wrong_length", "group_length") or i % 10 == 0
        if traced:
            tracemalloc.start()
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outcome = exercise(mutant)
        except AssertionError as exc:
            failures.append(f"{label}: {exc}")
            outcome = "failed"
        except Exception as exc:  # noqa: BLE001 - the traceback this test hunts for
            failures.append(f"{label}: {type(exc).__name__}: {exc}")
            outcome = "traceback"
        finally:
            seconds = time.perf_counter() - t0
            if traced:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                if peak > MAX_TRACED_BYTES:
                    failures.append(f"{label}: traced {peak / 2**20:.0f} MiB")
        if seconds > MAX_SECONDS:
            failures.append(f"{label}: took {seconds:.1f} s")
        slowest = max(slowest, (seconds, label))
        outcomes[outcome] += 1
        by_kind[kind][outcome] += 1
        mutant.unlink()
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    with capsys.disabled():
        print(f"\nfuzz: {n} mutants of {len(files)} files in "
              f"{time.perf_counter() - t_all:.1f} s: {dict(outcomes)}; slowest "
              f"{slowest[0]:.2f} s ({slowest[1]}); peak RSS grew {grew_mib:.0f} MiB")
        for k in kinds:
            print(f"  {k:14s} {dict(by_kind[k])}")
    assert not failures, "\n".join(failures[:20])
    assert outcomes["loaded"] > 0 and outcomes["refused"] > 0
    assert grew_mib < 1024


@pytest.mark.parametrize("claim", [
    {"Rows": 65535, "Columns": 65535},
    {"NumberOfFrames": 2**31 - 1},
])
def test_huge_header_claims_refused_before_allocating(tmp_path, claim):
    stored = np.zeros((16, 16), np.int16)
    path = ct_slice(tmp_path / "huge.dcm", stored, extra=claim)
    tracemalloc.start()
    try:
        res = load_path(path)
        with pytest.raises(LoadError, match="header claims"):
            read_frame_hu(path, 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert res.volumes == [] and "header claims" in res.errors[0].reason
    assert peak < 32 * 2**20
