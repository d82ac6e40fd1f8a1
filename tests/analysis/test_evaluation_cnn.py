"""evaluate_run on a CNN run: Grad-CAM overlays only (no rollout), and they reach the report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pypdf import PdfReader

from tests.evalrun import tiny_cnn_run, tiny_sample
from vitdesk.analysis.evaluation import evaluate_run
from vitdesk.analysis.run_model import attention_overlays


@pytest.fixture(scope="module")
def cnn_eval(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 2-core box: one thread is faster for these tiny convs
    try:
        root = tmp_path_factory.mktemp("cnneval")
        run = tiny_cnn_run(tiny_sample(root / "sample"), root / "run")
        ev = evaluate_run(run, robustness=False, shift=False, fairness=False,
                          attention_samples=2, n_boot=20, device="cpu")
    finally:
        torch.set_num_threads(threads)
    return run, ev


def test_cnn_run_gets_grad_cam_overlays_only(cnn_eval):
    _, ev = cnn_eval
    assert len(ev.attention) == 2  # 2 slices x Grad-CAM (no rollout for a CNN)
    assert {a.method for a in ev.attention} == {"gradcam"}
    assert not any("attention maps were skipped" in n for n in ev.notes)
    for a in ev.attention:
        assert a.image.shape == (48, 48, 3) and a.image.dtype == np.uint8
        assert a.caption.endswith(" CAM") and "rollout" not in a.caption
        assert a.image.std() > 1  # a real heat map, not a blank or constant tint


def test_cnn_overlay_follows_the_cam(cnn_eval):
    from vitdesk.analysis.attention import grad_cam, overlay
    from vitdesk.analysis.run_model import display_image
    from vitdesk.data.dataset import Letterbox, preprocess_slice
    from vitdesk.engine.run import load_run

    run, _ = cnn_eval
    lr = load_run(run, device="cpu")
    raw = np.random.default_rng(0).normal(40, 30, (40, 56)).astype(np.float32)
    x = torch.from_numpy(preprocess_slice(raw, "dicom", lr.window, lr.img_size, lr.mean,
                                          lr.std))
    images = attention_overlays(lr.model, x, raw, "dicom", lr.window, lr.img_size, 1)
    assert set(images) == {"gradcam"}
    cam = grad_cam(lr.model, x[None], target=1, inverse=Letterbox(40, 56, 32).to_slice)[0]
    expected = overlay(display_image(raw, "dicom", lr.window), cam, 0.45)
    np.testing.assert_array_equal(images["gradcam"], expected)


def test_cam_only_attention_renders_in_the_report(cnn_eval, tmp_path):
    from vitdesk.report.from_run import write_run_report

    run, ev = cnn_eval
    files = write_run_report(run, ev, tmp_path / "rep")
    html = files.html.read_text(encoding="utf-8")
    assert "Attention" in html and html.count(" CAM") >= 2
    text = " ".join(p.extract_text() or "" for p in PdfReader(str(files.pdf)).pages)
    assert "Attention" in text


def test_predict_rows_point_at_the_cnn_grad_cam(cnn_eval, tmp_path):
    from vitdesk.analysis.predict import predict_input

    run, _ = cnn_eval
    case = run.parent / "sample" / "case_001"
    res = predict_input(run, case, attention_dir=tmp_path / "att", device="cpu")
    assert len(res.overlays) == len(res.rows) == 6  # one Grad-CAM per slice, no rollout
    for r in res.rows:
        assert r.overlay is not None and r.overlay.is_file()
        assert r.overlay.name.endswith("_gradcam.png")
