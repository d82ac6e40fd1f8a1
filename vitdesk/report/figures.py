"""Static report figures (matplotlib, object API: no pyplot global state, no GUI backend)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

FIGSIZE = (7.5, 3.2)


def to_png(fig: Figure, dpi: int = 110) -> bytes:
    """PNG bytes of a figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _num(v: object) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def training_curves(history: Sequence[dict]) -> Figure:
    """Train/val loss and val accuracy per epoch (counted across stages), stage lines."""
    fig = Figure(figsize=FIGSIZE)
    ax_l, ax_a = fig.subplots(1, 2)
    ep = np.arange(1, len(history) + 1)
    for key, style in (("train_loss", "-o"), ("val_loss", "-s")):
        vals = [_num(r.get(key)) for r in history]
        if np.isfinite(vals).any():
            ax_l.plot(ep, vals, style, ms=3, label=key.replace("_", " "))
    acc = [_num(r.get("val_acc")) for r in history]
    if np.isfinite(acc).any():
        ax_a.plot(ep, acc, "-o", ms=3, color="tab:green", label="val acc")
    stages = [r.get("stage") for r in history]
    for i in range(1, len(stages)):
        if stages[i] != stages[i - 1]:
            for ax in (ax_l, ax_a):
                ax.axvline(i + 0.5, color="grey", ls="--", lw=0.8)
    ax_l.set(xlabel="epoch (all stages)", ylabel="loss", title="Loss")
    ax_a.set(xlabel="epoch (all stages)", ylabel="accuracy", title="Validation accuracy",
             ylim=(0, 1.02))
    ax_l.legend(fontsize=8)
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def confusion_and_reliability(confusion: Sequence[Sequence[int]], classes: Sequence[str],
                              bins: Sequence[dict], ece: float | None) -> Figure:
    """Confusion matrix (counts) beside a reliability diagram."""
    fig = Figure(figsize=FIGSIZE)
    ax_c, ax_r = fig.subplots(1, 2)
    cm = np.asarray(confusion, dtype=float)
    ax_c.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax_c.text(j, i, f"{int(v)}", ha="center", va="center",
                  color="white" if v > cm.max() / 2 else "black", fontsize=9)
    ticks = range(len(classes))
    ax_c.set_xticks(list(ticks), list(classes), fontsize=8, rotation=30)
    ax_c.set_yticks(list(ticks), list(classes), fontsize=8)
    ax_c.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    centres = [(b["lo"] + b["hi"]) / 2 for b in bins]
    width = (bins[0]["hi"] - bins[0]["lo"]) if bins else 0.1
    accs = [_num(b.get("accuracy")) for b in bins]
    ax_r.bar(centres, np.nan_to_num(accs), width=width * 0.9, color="tab:blue", alpha=0.7,
             label="accuracy")
    ax_r.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    ax_r.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
             title="Reliability" + (f" (ECE {ece:.3f})" if ece is not None else ""))
    ax_r.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def reliability_before_after(bins_before: Sequence[dict], bins_after: Sequence[dict],
                             ece_before: float | None, ece_after: float | None) -> Figure:
    """Reliability diagrams of the same slices before and after temperature scaling."""
    fig = Figure(figsize=FIGSIZE)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, bins, ece, name in ((axes[0], bins_before, ece_before, "Before"),
                                (axes[1], bins_after, ece_after, "After temperature")):
        centres = [(b["lo"] + b["hi"]) / 2 for b in bins]
        width = (bins[0]["hi"] - bins[0]["lo"]) if bins else 0.1
        accs = np.nan_to_num([_num(b.get("accuracy")) for b in bins])
        confs = [_num(b.get("confidence")) for b in bins]
        ax.bar(centres, accs, width=width * 0.9, color="tab:blue", alpha=0.7, label="accuracy")
        ax.plot(centres, confs, "o", color="tab:orange", ms=3, label="mean confidence")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence",
               title=name + (f" (ECE {ece:.3f})" if ece is not None else ""))
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def fairness_bars(report: dict) -> Figure:
    """Per-group accuracy, TPR and FPR with bootstrap intervals; small groups hatched."""
    rows = report["rows"]
    names = ("accuracy", "tpr", "fpr")
    fig = Figure(figsize=FIGSIZE)
    ax = fig.subplots()
    x = np.arange(len(rows))
    w = 0.8 / len(names)
    for k, name in enumerate(names):
        vals = np.array([_num(r["metrics"][name]["value"]) for r in rows])
        lo = np.array([_num(r["metrics"][name]["lo"]) for r in rows])
        hi = np.array([_num(r["metrics"][name]["hi"]) for r in rows])
        err = np.nan_to_num(np.vstack([vals - lo, hi - vals]).clip(0))
        bars = ax.bar(x + (k - 1) * w, np.nan_to_num(vals), w, yerr=err, capsize=2,
                      label=name.upper() if name != "accuracy" else "accuracy")
        for bar, r in zip(bars, rows, strict=False):
            if r.get("small"):
                bar.set_hatch("//")
    ax.set_xticks(x, [f"{r['group']}\n(n={r['n']})" for r in rows], fontsize=8)
    ax.set(ylim=(0, 1.22), title=f"{report['attribute']}: {report['positive']} vs rest "
                                 "(hatched: small group)")
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.legend(fontsize=8, ncol=3, loc="upper center")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def robustness_curves(results: Sequence[dict]) -> Figure:
    """One panel per perturbation: accuracy vs strength with the clean level dashed."""
    curves = [c for r in results for c in r["curves"]]
    n = max(len(curves), 1)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(7.5, 2.4 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, c in zip(axes, curves, strict=False):
        ax.plot(c["strengths"], c["accuracy"], "-o", ms=3)
        ax.axhline(c["clean_accuracy"], color="grey", ls="--", lw=0.8)
        ax.set_title(c["name"], fontsize=9)
        ax.set_xlabel(c.get("unit", ""), fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
        ax.locator_params(axis="x", nbins=4)
        ax.grid(alpha=0.3)
    for ax in axes[len(curves):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def attention_grid(images: Sequence[np.ndarray], captions: Sequence[str], cols: int = 4) -> Figure:
    """Overlays in a grid with captions."""
    n = max(len(images), 1)
    rows = math.ceil(n / cols)  # fixed column count: same thumbnail size on every page
    fig = Figure(figsize=(7.5, 2.1 * rows + 0.2))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, img, cap in zip(axes, images, captions, strict=False):
        ax.imshow(img)
        ax.set_title(cap, fontsize=7)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig
