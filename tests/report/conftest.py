"""A realistic fake ReportData built from the analysis functions on random predictions."""

from __future__ import annotations

import numpy as np
import pytest

from vitdesk.analysis.attention import overlay
from vitdesk.analysis.fairness import age_groups, fairness_all, sex_groups
from vitdesk.analysis.metrics import evaluate, transfer_effectiveness
from vitdesk.analysis.robustness import Curve, RobustnessResult
from vitdesk.analysis.shift import MahalanobisDetector
from vitdesk.report.data import AttentionSample, ModelCard, ReportData


def fake_report_data(seed: int = 0, n_attention: int = 3) -> ReportData:
    rng = np.random.default_rng(seed)
    n, n_pat = 240, 24
    patients = np.array([f"p{i % n_pat:02d}" for i in range(n)])
    y = (np.array([i % n_pat for i in range(n)]) % 2).astype(int)
    logits = rng.normal(size=(n, 2))
    logits[np.arange(n), y] += 1.8
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    history = []
    for stage, epochs in ((1, 3), (2, 3), (3, 4)):
        for e in range(1, epochs + 1):
            k = len(history)
            history.append({"stage": stage, "epoch": e, "step": 10 * (k + 1),
                            "train_loss": 0.7 * 0.85 ** k, "val_loss": 0.7 * 0.9 ** k + 0.01 * k,
                            "val_acc": min(0.5 + 0.05 * k, 0.93), "lr": 1e-3 * 0.8 ** k,
                            "seconds": 12.0})
    sexes = sex_groups(rng.choice(["M", "F"], n_pat)[np.arange(n) % n_pat])
    ages = age_groups(rng.choice(["035Y", "052Y", "071Y", "064Y"], n_pat)[np.arange(n) % n_pat])
    fair = fairness_all(y, probs, {"sex": sexes, "age": ages}, classes=["normal", "lesion"],
                        n_boot=40, clusters=patients)
    hu = RobustnessResult(0.86, [
        Curve("noise_hu", "HU (sigma)", (0, 10, 25, 50), (0.86, 0.85, 0.8, 0.7), 0.86),
        Curve("shift_hu", "HU", (-100, -50, 0, 50, 100), (0.7, 0.8, 0.86, 0.81, 0.72), 0.86)])
    adv = RobustnessResult(0.86, [
        Curve("fgsm", "eps, [0,1] image units", (0, 1 / 255, 4 / 255), (0.86, 0.6, 0.2), 0.86)])
    det = MahalanobisDetector().fit(rng.normal(size=(200, 6)))
    shift = det.score(rng.normal(0.3, 1.0, size=(60, 6)))
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    samples = []
    for i in range(n_attention):
        grey = 0.5 + 0.4 * np.sin(6 * xx + i) * np.cos(5 * yy)
        heat = np.exp(-((xx - 0.3 - 0.1 * i) ** 2 + (yy - 0.6) ** 2) / 0.02)
        samples.append(AttentionSample(overlay(grey, heat), f"case {i + 1}: lesion 0.{80 + i}"))
    return ReportData(
        title="vitdesk evaluation report",
        subtitle="run demo-run on synthetic CT sample",
        created="2026-11-27 21:00 UTC",
        model=ModelCard(
            architecture="vit_small_patch16_224 (22.1 M parameters)",
            weights_source="local file vit_small.safetensors (sha256 1a2b3c4d5e6f)",
            backbone="ImageNet-21k pretrained, ImageNet-1k fine-tuned (timm augreg)",
            img_size=224, windowing="brain 80/40, subdural 200/75, bone 1800/400",
            recipe="staged: head, top 4 blocks, all blocks with layer decay 0.75",
            stages=[{"stage": 1, "name": "head", "epochs": 3, "trainable": "head"},
                    {"stage": 2, "name": "top blocks", "epochs": 3, "trainable": "blocks 8-11"},
                    {"stage": 3, "name": "all", "epochs": 4, "trainable": "all"}],
            classes=["normal", "lesion"],
            data_sizes={"train": 1680, "val": 360, "test": 240},
            patients={"train": 168, "val": 36, "test": 24},
            split="by patient 70/15/15, stratified, seed 0",
            software={"vitdesk": "0.1.0", "torch": "2.14.1", "timm": "1.0.31"},
            seed=0, device="cpu"),
        history=history,
        evaluation=evaluate(y, probs, ["normal", "lesion"], patients, n_boot=50),
        tta={"n": 240, "n_views": 6, "views": ["identity", "zoom0.9", "zoom1.1", "flip",
             "flip+zoom0.9", "flip+zoom1.1"], "changed": 7, "mean_uncertainty": 0.04,
             "mean_entropy": 0.31, "accuracy_plain": 0.85, "accuracy_tta": 0.87},
        transfer=transfer_effectiveness({"history": history, "metrics": {"accuracy": 0.87}},
                                        {"history": history[:4]}, 2),
        fairness=fair,
        robustness=[hu, adv],
        shift=shift,
        attention=samples,
        notes=["Synthetic data: numbers are for demonstration only."],
    )


@pytest.fixture(scope="module")
def report_data() -> ReportData:
    return fake_report_data()
