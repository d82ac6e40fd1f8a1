"""Formula-driven supervised pretraining: images made from formulas, no data at all.

Kataoka et al. showed that a ViT pretrained to classify images generated from
formulas (fractals: FractalDB, ExFractalDB; contours: RCDB, VisualAtom) transfers about
as well as one pretrained on ImageNet-21k. Nothing is downloaded and no patient image
is needed, so this is a second offline source of a backbone next to MAE on the user's
own slices (:mod:`vitdesk.engine.pretrain` runs both; ``vitdesk pretrain --formula``).

Two families, each class one formula and each image one random instance of it:

``contours``
    after VisualAtom (Takashima et al., 2023): 1-5 concentric closed orbits whose
    radius is modulated by two sine waves, ``r(t) = R (1 + a (sin(f1 t + p1) +
    sin(f2 t + p2)) / 2)``, sampled at a class-specific number of vertices (few
    vertices give polygons, many give smooth curves). A class is ``(f1, f2, a,
    orbits, vertices, relative phase)``; an instance varies size, place, rotation,
    line width, brightness, phases (a little) and background noise.
``fractals``
    after FractalDB (Kataoka et al., 2020) with the sigma-factor sampling of Anderson
    and Farrell (2022): an iterated function system of 2-4 contractive affine maps
    whose singular values satisfy ``sum(s1 + 2 s2)`` in ``[(5 + N) / 2, (6 + N) / 2]``,
    which gives filled, non-degenerate attractors. A class is one system; an instance
    perturbs its maps by up to 10 %, flips/rotates the attractor and renders it with
    the chaos game.

Everything random is a function of ``(seed, class)`` for the formulas and of
``(seed, epoch, index)`` for the instances, so a run is reproducible and a resumed run
sees exactly the images it would have seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from vitdesk.errors import ConfigError

KINDS = ("contours", "fractals")
_SUPERSAMPLE = 2  # draw at 2x and area-resize: anti-aliased lines at 32-64 px


# ---- contours -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ContourFormula:
    """One contour class."""

    f1: int
    f2: int
    amp: float
    orbits: int
    vertices: int
    phase: float  # of the second wave relative to the first: part of the shape


def contour_formulas(n: int, seed: int) -> list[ContourFormula]:
    """``n`` distinct contour classes (distinct frequency pairs first, then other shapes)."""
    rng = np.random.default_rng([int(seed), 0xC0])
    seen: set[tuple] = set()
    out: list[ContourFormula] = []
    while len(out) < n:
        f1, f2 = sorted(int(v) for v in rng.integers(0, 16, size=2))
        orbits = int(rng.integers(1, 6))
        vertices = int(rng.choice([3, 4, 5, 6, 8, 12, 24, 200]))
        key = (f1, f2, orbits, vertices)
        if key in seen:
            continue
        seen.add(key)
        out.append(ContourFormula(f1, f2, float(rng.uniform(0.1, 0.45)), orbits, vertices,
                                  float(rng.uniform(0, 2 * np.pi))))
    return out


def render_contour(f: ContourFormula, size: int, rng: np.random.Generator) -> np.ndarray:
    """One instance of ``f`` as a float32 ``(size, size)`` image in [0, 1]."""
    import cv2

    big = size * _SUPERSAMPLE
    canvas = np.zeros((big, big), np.float32)
    radius = big / 2 * rng.uniform(0.45, 0.85)
    centre = big / 2 + rng.uniform(-0.12, 0.12, size=2) * big
    rot = rng.uniform(0, 2 * np.pi)
    p1 = rng.uniform(0, 2 * np.pi)
    p2 = p1 * f.f2 / max(f.f1, 1) + f.phase + rng.normal(0, 0.2)
    amp = f.amp * rng.uniform(0.9, 1.1)
    t = np.linspace(0, 2 * np.pi, f.vertices, endpoint=False)
    step = rng.uniform(0.12, 0.22)
    thick = int(rng.integers(1, 3)) * _SUPERSAMPLE
    for k in range(f.orbits):
        r = radius * (1 - k * step)
        if r < 2 * thick:
            break
        # each orbit drifts its phase a little: the same shape family, not a copy
        dp = rng.normal(0, 0.1, size=2)
        rr = r * (1 + amp * (np.sin(f.f1 * t + p1 + dp[0]) + np.sin(f.f2 * t + p2 + dp[1])) / 2)
        pts = np.stack([centre[0] + rr * np.cos(t + rot), centre[1] + rr * np.sin(t + rot)], 1)
        cv2.polylines(canvas, [np.round(pts * 16).astype(np.int32)], True,
                      float(rng.uniform(0.6, 1.0)), thick, cv2.LINE_AA, shift=4)
    img = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    return _finish(img, rng)


# ---- fractals -----------------------------------------------------------------------------
@dataclass(frozen=True)
class FractalFormula:
    """One iterated function system: ``x -> A_i x + b_i`` with probability ``p_i``."""

    a: np.ndarray  # (N, 2, 2)
    b: np.ndarray  # (N, 2)

    @property
    def probs(self) -> np.ndarray:
        det = np.abs(np.linalg.det(self.a)) + 1e-3
        return det / det.sum()


def _rotation(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _sample_system(rng: np.random.Generator) -> FractalFormula:
    n = int(rng.integers(2, 5))
    target = rng.uniform((5 + n) / 2, (6 + n) / 2)
    # split the sigma budget over the maps, then each map's share into s1 >= s2
    share = rng.dirichlet(np.ones(n)) * target
    a, b = [], []
    for alpha in np.minimum(share, 2.9):  # s1, s2 <= 1 caps a map's share at 3
        lo = max(alpha - 1.0, 0.0) / 2 if alpha > 1 else 0.0  # s1 = alpha - 2 s2 <= 1
        s2 = rng.uniform(lo, min(alpha / 3, 1.0))  # s2 <= s1 = alpha - 2 s2
        s1 = min(alpha - 2 * s2, 1.0)
        d = np.diag([1.0, float(rng.choice([-1.0, 1.0]))])
        m = _rotation(rng.uniform(-np.pi, np.pi)) @ np.diag([s1, s2]) @ \
            _rotation(rng.uniform(-np.pi, np.pi)) @ d
        a.append(m)
        b.append(rng.uniform(-1, 1, size=2))
    return FractalFormula(np.array(a), np.array(b))


def fractal_formulas(n: int, seed: int) -> list[FractalFormula]:
    """``n`` fractal classes (systems whose attractor covers more than a few pixels)."""
    rng = np.random.default_rng([int(seed), 0xF2])
    out: list[FractalFormula] = []
    while len(out) < n:
        f = _sample_system(rng)
        pts = _chaos_game(f, np.random.default_rng([int(seed), len(out)]), 256, 24)
        ext = pts.max(0) - pts.min(0)
        # degenerate systems collapse onto a line or a point: no shape to learn
        if np.all(np.isfinite(ext)) and ext.min() > 0.05 * max(ext.max(), 1e-9):
            out.append(f)
    return out


def _chaos_game(f: FractalFormula, rng: np.random.Generator, chains: int, steps: int,
                burn: int = 8) -> np.ndarray:
    """Points on the attractor: ``chains`` walks of ``steps`` maps, first ``burn`` dropped."""
    x = rng.uniform(-1, 1, size=(chains, 2))
    cum = np.cumsum(f.probs)
    ks = np.minimum(np.searchsorted(cum, rng.random((steps, chains))), len(f.a) - 1)
    pts = []
    for i in range(steps):
        a, b = f.a[ks[i]], f.b[ks[i]]
        x = np.stack([a[:, 0, 0] * x[:, 0] + a[:, 0, 1] * x[:, 1],
                      a[:, 1, 0] * x[:, 0] + a[:, 1, 1] * x[:, 1]], 1) + b
        if i >= burn:
            pts.append(x)
    return np.concatenate(pts)


def render_fractal(f: FractalFormula, size: int, rng: np.random.Generator) -> np.ndarray:
    """One instance of ``f`` as a float32 ``(size, size)`` image in [0, 1]."""
    import cv2

    jitter = FractalFormula(f.a * rng.uniform(0.9, 1.1, size=f.a.shape), f.b)
    # enough points for a filled attractor at any size (FractalDB renders ~100k at 362 px)
    pts = _chaos_game(jitter, rng, max(256, size * size // 32), 40)
    pts = pts @ _rotation(rng.choice([0, 0.5, 1.0, 1.5]) * np.pi).T
    if rng.random() < 0.5:
        pts[:, 0] = -pts[:, 0]
    lo, hi = pts.min(0), pts.max(0)
    big = size * _SUPERSAMPLE
    fill = rng.uniform(0.6, 0.95)
    scale = fill * big / max(float((hi - lo).max()), 1e-6)
    centre = big / 2 + rng.uniform(-0.08, 0.08, size=2) * big
    xy = (pts - (lo + hi) / 2) * scale + centre
    ij = np.round(xy).astype(np.int64)
    ok = (ij >= 0).all(1) & (ij < big).all(1)
    canvas = np.zeros((big, big), np.float32)
    canvas[ij[ok, 1], ij[ok, 0]] = float(rng.uniform(0.6, 1.0))
    img = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    return _finish(img, rng)


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add a faint background level and noise, as real images have."""
    img = img + float(rng.uniform(0.0, 0.15)) + rng.normal(0, 0.03, img.shape)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


# ---- dataset and model --------------------------------------------------------------------
class FormulaDataset(Dataset):
    """``n_classes * per_class`` generated images per epoch, as ``(x, class)``.

    Args:
        kind: ``contours`` or ``fractals``.
        n_classes: number of formulas (classes).
        per_class: images of each class per epoch (fresh instances every epoch).
        img_size: side in pixels.
        mean, std: the model's normalisation; the grey image is repeated on 3 channels.
        seed: fixes the formulas and the instances.
    """

    def __init__(self, kind: str, n_classes: int, per_class: int, img_size: int,
                 mean: Sequence[float], std: Sequence[float], seed: int = 0) -> None:
        if kind not in KINDS:
            raise ConfigError(f"formula '{kind}': choose one of {', '.join(KINDS)}")
        if n_classes < 2 or per_class < 1:
            raise ConfigError("formula pretraining needs at least 2 classes and 1 image per "
                              "class")
        self.kind, self.n_classes, self.per_class = kind, int(n_classes), int(per_class)
        self.img_size, self.seed, self.epoch = int(img_size), int(seed), 0
        make = contour_formulas if kind == "contours" else fractal_formulas
        self.formulas = make(self.n_classes, self.seed)
        self._render = render_contour if kind == "contours" else render_fractal
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)

    @property
    def fingerprint(self) -> str:
        return f"formula:{self.kind}:{self.n_classes}:{self.seed}"

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n_classes * self.per_class

    def image(self, index: int, epoch: int | None = None) -> np.ndarray:
        """The raw ``(size, size)`` image of ``index`` in ``epoch`` (for previews)."""
        ep = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, ep, int(index)])
        return self._render(self.formulas[index % self.n_classes], self.img_size, rng)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = torch.from_numpy(self.image(index)).expand(len(self.mean), -1, -1)
        return (img - self.mean) / self.std, int(index % self.n_classes)


class FormulaClassifier(nn.Module):
    """A timm ViT whose head classifies the formulas; saved without that head.

    Args:
        encoder: the ViT built with ``num_classes`` = the number of formulas.
        label_smoothing: as in the FractalDB/VisualAtom recipes (0.1).
    """

    def __init__(self, encoder: nn.Module, label_smoothing: float = 0.1) -> None:
        super().__init__()
        if not hasattr(encoder, "patch_embed"):
            raise ConfigError(f"{type(encoder).__name__} is not a timm VisionTransformer: "
                              "formula pretraining supports ViT/DeiT models")
        self.encoder = encoder
        ps = encoder.patch_embed.patch_size
        self.patch = int(ps[0] if isinstance(ps, tuple | list) else ps)
        self.in_chans = int(encoder.patch_embed.proj.in_channels)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def no_weight_decay(self) -> set[str]:
        enc = getattr(self.encoder, "no_weight_decay", lambda: set())()
        return {f"encoder.{k}" for k in enc}

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder weights with the fine-tuning model's key names (no head)."""
        return {k: v for k, v in self.encoder.state_dict().items()
                if not k.startswith(("head.", "head_dist."))}

    def forward(self, imgs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        out = self.encoder(imgs)
        if isinstance(out, tuple):  # a distilled ViT in training mode: both heads learn
            return sum(self.loss_fn(o, targets) for o in out) / len(out)
        return self.loss_fn(out, targets)
