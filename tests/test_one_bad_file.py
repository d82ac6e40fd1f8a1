"""One bad file never hides the good series beside it: scan, load, inspect, workspace, predict.

The folder holds a good 3-slice series, a file whose Modality LUT Sequence item has
no LUT Descriptor (pydicom's apply_modality_lut raises TypeError on it; vitdesk
falls back to Rescale Slope/Intercept and warns) and a file whose Rows element has
an unknown VR (pydicom raises NotImplementedError when it is read).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.imaging.dcmfactory import ct_series, ct_slice
from vitdesk.cli import main
from vitdesk.imaging import scan as scan_mod
from vitdesk.imaging.io import load_path
from vitdesk.imaging.scan import scan_path

GOOD_UID, LUT_UID, BAD_UID = "1.2.3.100", "1.2.3.101", "1.2.3.102"
STORED = np.arange(3 * 8 * 8, dtype=np.int16).reshape(3, 8, 8)


def _unknown_vr(path: Path, tag: bytes) -> Path:
    data = bytearray(path.read_bytes())
    i = data.find(tag)
    assert i > 0
    data[i + 4:i + 6] = b"ZZ"  # explicit VR little endian: the VR follows the tag
    path.write_bytes(bytes(data))
    return path


@pytest.fixture()
def folder(tmp_path: Path) -> dict:
    root = tmp_path / "study"
    good = ct_series(root, STORED, series_uid=GOOD_UID, prefix="good")
    item = Dataset()
    item.add_new(0x00283006, "US", [0] * 16)  # LUT Data without LUT Descriptor
    lut = ct_slice(root / "lut.dcm", STORED[0], series_uid=LUT_UID,
                   extra={"ModalityLUTSequence": Sequence([item])})
    bad = _unknown_vr(ct_slice(root / "bad.dcm", STORED[1], series_uid=BAD_UID),
                      b"\x28\x00\x10\x00US")  # (0028,0010) Rows
    return {"root": root, "good": good, "lut": lut, "bad": bad}


def test_scan_keeps_good_series_and_names_the_bad_file(folder):
    res = scan_path(folder["root"])
    files = sorted(f for s in res.series for f in s.files)
    assert files == sorted(str(p) for p in [*folder["good"], folder["lut"]])
    assert [e.path for e in res.errors] == [str(folder["bad"])]
    reason = res.errors[0].reason
    assert "NotImplementedError" in reason and "export it again" in reason and "\n" not in reason


def test_load_gives_good_hu_lut_fallback_and_lists_bad(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = load_path(folder["root"])
    by_n = sorted(res.volumes, key=lambda v: v.n_slices)
    lut_vol, good_vol = by_n
    np.testing.assert_array_equal(good_vol.hu, STORED.astype(np.float32) - 1024)
    np.testing.assert_array_equal(lut_vol.hu[0], STORED[0].astype(np.float32) - 1024)
    assert any("Modality LUT Sequence ignored" in w and "LUT Descriptor" in w
               for w in lut_vol.warnings)
    assert [e.path for e in res.errors] == [str(folder["bad"])]


def test_inspect_lists_bad_file_and_exits_0(folder, capsys):
    assert main(["inspect", str(folder["root"])]) == 0
    out = capsys.readouterr().out
    assert "3 slices" in out and "1 slice " in out
    assert "warning: Modality LUT Sequence ignored" in out
    bad_lines = [ln for ln in out.splitlines() if ln.startswith(f"{folder['bad']}: ")]
    assert len(bad_lines) == 1 and "export it again" in bad_lines[0]


def test_inspect_nothing_loaded_exits_2(folder, capsys):
    only_bad = folder["root"].parent / "only_bad"
    only_bad.mkdir()
    os.replace(folder["bad"], only_bad / "bad.dcm")
    assert main(["inspect", str(only_bad)]) == 2
    captured = capsys.readouterr()
    assert f"{only_bad / 'bad.dcm'}: " in captured.out
    assert "no series could be loaded" in captured.err and "Traceback" not in captured.err


def test_unreadable_folder_is_named_not_empty(tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    ct_slice(locked / "a.dcm", STORED[0])
    if os.geteuid() == 0:  # root reads anything: make listing the folder fail instead
        real = os.scandir

        def scandir(path="."):
            if Path(path) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(os, "scandir", scandir)
    else:
        locked.chmod(0)
    try:
        res = scan_path(tmp_path)
        assert res.series == [] and [e.path for e in res.errors] == [str(locked)]
        assert "Permission denied" in res.errors[0].reason
        assert "read access" in res.errors[0].reason
        assert main(["inspect", str(tmp_path)]) == 2
        captured = capsys.readouterr()
        assert f"{locked}: cannot list this folder" in captured.out
        assert "0 files looked at" not in captured.err
    finally:
        locked.chmod(0o755)


def test_any_exception_of_one_file_is_recorded(tmp_path, monkeypatch):
    ct_series(tmp_path, STORED, series_uid=GOOD_UID)
    victim = sorted(tmp_path.iterdir())[0]
    real = scan_mod._read_header

    def flaky(path, *args, **kwargs):
        if Path(path) == victim:
            raise RuntimeError("a plugin bug")  # not in any list of expected types
        return real(path, *args, **kwargs)

    monkeypatch.setattr(scan_mod, "_read_header", flaky)
    res = scan_path(tmp_path)
    assert len(res.series) == 1 and len(res.series[0].files) == 2
    assert [e.path for e in res.errors] == [str(victim)]
    assert "RuntimeError: a plugin bug" in res.errors[0].reason


def test_workspace_import_keeps_good_series_and_records_bad(folder, tmp_path):
    from vitdesk.data.workspace import Workspace

    with Workspace.open(tmp_path / "ws") as ws:
        assert ws.import_scan(scan_path(folder["root"])) == 2
        assert sorted(s.n_slices for s in ws.series()) == [1, 3]
        errors = ws.import_errors()
        assert [p for p, _ in errors] == [str(folder["bad"])]
        assert "export it again" in errors[0][1]


@pytest.fixture(scope="module")
def tiny_run_dir(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from tests.evalrun import tiny_run, tiny_sample

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("badfile_run")
    return tiny_run(tiny_sample(root / "sample"), root / "run", epochs=1)


def test_predict_scores_good_slices_and_lists_bad_file(folder, tiny_run_dir):
    from vitdesk.analysis.predict import predict_input

    res = predict_input(tiny_run_dir, folder["root"], device="cpu")
    assert len(res.rows) == 4  # 3 good slices + the LUT file's slice
    for r in res.rows:
        assert r.probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert len(res.errors) == 1 and res.errors[0].startswith(f"{folder['bad']}: ")
