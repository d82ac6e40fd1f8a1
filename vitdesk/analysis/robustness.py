"""Robustness: accuracy under HU perturbations and adversarial attacks.

HU perturbations (noise, shift, contrast) act on raw Hounsfield units *before*
windowing, as scanner differences do; the caller passes the same
``preprocess(hu_batch) -> tensor`` used for inference, so windowing, resizing and
normalisation are exactly those of the model.

Attacks (FGSM, PGD) act on the model input. Epsilons are in units of the
windowed [0, 1] image (1/255 is one grey level of an 8-bit display), not of the
mean/std-normalised tensor: the attack maps the input back to [0, 1] with ``mean``
and ``std``, perturbs, clamps to [0, 1] and renormalises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vitdesk.errors import DataError
from vitdesk.jobs import NEVER, CancelToken, Listener, Progress, emit

Preprocess = Callable[[np.ndarray], torch.Tensor]

DEFAULT_PERTURBATIONS: dict[str, tuple[float, ...]] = {
    "noise_hu": (0.0, 10.0, 25.0, 50.0),
    "shift_hu": (-100.0, -50.0, 0.0, 50.0, 100.0),
    "contrast": (0.8, 0.9, 1.0, 1.1, 1.2),
}
UNITS = {"noise_hu": "HU (sigma)", "shift_hu": "HU", "contrast": "x (about the slice mean)",
         "fgsm": "eps, [0,1] image units", "pgd": "eps, [0,1] image units"}


@dataclass(frozen=True)
class Curve:
    """Accuracy at each strength of one perturbation; ``drop`` = clean - accuracy."""

    name: str
    unit: str
    strengths: tuple[float, ...]
    accuracy: tuple[float, ...]
    clean_accuracy: float

    @property
    def drop(self) -> tuple[float, ...]:
        return tuple(self.clean_accuracy - a for a in self.accuracy)

    def to_dict(self) -> dict:
        return {"name": self.name, "unit": self.unit, "strengths": list(self.strengths),
                "accuracy": list(self.accuracy), "clean_accuracy": self.clean_accuracy,
                "drop": list(self.drop)}


@dataclass
class RobustnessResult:
    """All curves of one robustness run."""

    clean_accuracy: float
    curves: list[Curve] = field(default_factory=list)
    # slices perturbed (a class-balanced subset of the scored ones, decided by argmax
    # without TTA): its clean accuracy is not the evaluation's, and says so
    n: int = 0

    def to_dict(self) -> dict:
        return {"clean_accuracy": self.clean_accuracy, "n": self.n,
                "curves": [c.to_dict() for c in self.curves]}


def perturb_hu(hu: np.ndarray, kind: str, strength: float, rng: np.random.Generator) -> np.ndarray:
    """One HU perturbation of a (N, H, W) batch: noise sigma, shift, or contrast factor."""
    hu = np.asarray(hu, dtype=np.float32)
    if kind == "noise_hu":
        if strength == 0:
            return hu.copy()
        return hu + rng.normal(0.0, strength, size=hu.shape).astype(np.float32)
    if kind == "shift_hu":
        return hu + np.float32(strength)
    if kind == "contrast":
        # scale about each slice's mean so the overall brightness stays put
        mean = hu.mean(axis=(-2, -1), keepdims=True)
        return (mean + (hu - mean) * np.float32(strength)).astype(np.float32)
    raise DataError(f"robustness: unknown perturbation {kind!r}; use {list(DEFAULT_PERTURBATIONS)}")


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> np.ndarray:
    outs = [model(x[i : i + batch_size]).argmax(1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(outs).numpy()


def hu_perturbation_curves(
    model: nn.Module,
    hu: np.ndarray,
    labels: np.ndarray,
    preprocess: Preprocess,
    *,
    perturbations: dict[str, Sequence[float]] | None = None,
    batch_size: int = 32,
    seed: int = 0,
    device: str | torch.device = "cpu",
    cancel: CancelToken = NEVER,
    listener: Listener | None = None,
) -> RobustnessResult:
    """Accuracy-vs-strength curves for HU perturbations of slices ``hu`` (N, H, W)."""
    hu = np.asarray(hu, dtype=np.float32)
    labels = np.asarray(labels).astype(int)
    if hu.ndim != 3 or len(hu) != len(labels):
        raise DataError(f"robustness: need HU slices (N, H, W) and N labels, got {hu.shape}")
    perturbations = perturbations or DEFAULT_PERTURBATIONS
    model.eval()
    total = sum(len(v) for v in perturbations.values()) * int(np.ceil(len(hu) / batch_size)) + 1
    done = 0

    def accuracy(batch_hu_fn: Callable[[np.ndarray], np.ndarray]) -> float:
        nonlocal done
        correct = 0
        for i in range(0, len(hu), batch_size):
            cancel.check()
            x = preprocess(batch_hu_fn(hu[i : i + batch_size])).to(device)
            correct += int((_predict(model, x, batch_size) == labels[i : i + batch_size]).sum())
            done += 1
            emit(listener, Progress("robustness", done, total))
        return correct / len(hu)

    clean = accuracy(lambda b: b)
    result = RobustnessResult(clean)
    for kind, strengths in perturbations.items():
        rng = np.random.default_rng(seed)
        accs = tuple(
            accuracy(lambda b, k=kind, s=s, r=rng: perturb_hu(b, k, s, r)) for s in strengths
        )
        result.curves.append(Curve(kind, UNITS.get(kind, ""), tuple(float(s) for s in strengths),
                                   accs, clean))
    return result


def _stats(mean: Sequence[float], std: Sequence[float], x: torch.Tensor):
    shape = (1, -1, 1, 1)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(shape)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(shape)
    return m, s


def fgsm(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
    mean: Sequence[float], std: Sequence[float],
) -> torch.Tensor:
    """Fast gradient sign attack; returns the attacked, normalised input."""
    return pgd(model, x, y, eps, mean, std, steps=1, step_size=eps, random_start=False)


def pgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
    mean: Sequence[float], std: Sequence[float], *, steps: int = 10,
    step_size: float | None = None, random_start: bool = True, seed: int = 0,
) -> torch.Tensor:
    """L-infinity PGD (Madry et al.) with ``eps`` in [0, 1] image units.

    The normalised input is mapped to [0, 1] by ``x * std + mean``, attacked there,
    kept within ``eps`` of the original and in [0, 1], then normalised back.
    """
    if eps == 0:
        return x.detach().clone()
    m, s = _stats(mean, std, x)
    x01 = (x.detach() * s + m).clamp(0.0, 1.0)
    step = step_size if step_size is not None else 2.5 * eps / steps
    adv = x01.clone()
    if random_start:
        g = torch.Generator(device="cpu").manual_seed(seed)
        noise = (torch.rand(x01.shape, generator=g) * 2 - 1).to(x01) * eps
        adv = (adv + noise).clamp(0.0, 1.0)
    was_training = model.training
    model.eval()
    try:
        for _ in range(steps):
            adv.requires_grad_(True)
            with torch.enable_grad():
                loss = F.cross_entropy(model((adv - m) / s), y)
                (grad,) = torch.autograd.grad(loss, adv)
            adv = adv.detach() + step * grad.sign()
            adv = torch.min(torch.max(adv, x01 - eps), x01 + eps).clamp(0.0, 1.0)
    finally:
        model.train(was_training)
    return ((adv - m) / s).detach()


def adversarial_curves(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor | np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    epsilons: Sequence[float] = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255),
    attacks: Sequence[str] = ("fgsm", "pgd"),
    pgd_steps: int = 5,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    cancel: CancelToken = NEVER,
    listener: Listener | None = None,
) -> RobustnessResult:
    """Accuracy-vs-epsilon curves for FGSM and PGD on normalised inputs ``x``."""
    y_all = torch.as_tensor(np.asarray(labels)).long()
    model.eval()
    clean = float((torch.as_tensor(_predict(model, x.to(device), batch_size)) == y_all)
                  .float().mean())
    result = RobustnessResult(clean)
    n_batches = int(np.ceil(len(x) / batch_size))
    total = len(attacks) * len(epsilons) * n_batches
    done = 0
    for attack in attacks:
        if attack not in ("fgsm", "pgd"):
            raise DataError(f"robustness: unknown attack {attack!r}; use 'fgsm' or 'pgd'")
        accs = []
        for eps in epsilons:
            correct = 0
            for i in range(0, len(x), batch_size):
                cancel.check()
                xb, yb = x[i : i + batch_size].to(device), y_all[i : i + batch_size].to(device)
                if attack == "fgsm":
                    adv = fgsm(model, xb, yb, eps, mean, std)
                else:
                    adv = pgd(model, xb, yb, eps, mean, std, steps=pgd_steps, seed=i)
                correct += int((_predict(model, adv, batch_size) == yb.cpu().numpy()).sum())
                done += 1
                emit(listener, Progress("robustness", done, total, f"{attack} eps={eps:.4f}"))
            accs.append(correct / len(x))
        result.curves.append(Curve(attack, UNITS[attack], tuple(float(e) for e in epsilons),
                                   tuple(accs), clean))
    return result
