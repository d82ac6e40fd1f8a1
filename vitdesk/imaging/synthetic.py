"""Synthetic chest / upper-abdomen CT studies written as real DICOM series.

Each patient is an analytic phantom in Hounsfield units: body outline with
subcutaneous fat and muscle, lungs with vessels, trachea, mediastinal fat, heart,
contrast-enhanced aorta, spine, ribs, sternum, and in the lower slices liver,
stomach, spleen and kidneys, with correlated Gaussian noise. About half of the
patients carry round metastases in both organs: solid lung nodules over one
contiguous range of lung-level slices and hypodense liver lesions over one range of
liver-level slices; ``labels.csv`` labels every slice file ``normal`` or
``lesion``. Lesions are a little more frequent in older patients so that fairness
plots have something to show.

Scanner profiles (``SCANNERS``: noise level and texture, reconstruction kernel
sharpness, HU calibration offset, slice thickness, field of view) re-acquire the
same patients as another site's scanner would, so site shift can be produced and
tested; the profile is recorded in the DICOM (Manufacturer, ManufacturerModelName,
ConvolutionKernel, SliceThickness). Without a profile the sample is the original one.

Everything is a deterministic function of ``seed`` (same seed, same bytes).
Folder and file names carry no PHI: ``case_007/series_1/IM_0003.dcm``. The
synthetic names, IDs and dates live only inside the DICOM headers.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vitdesk.errors import DataError
from vitdesk.imaging.dicom_write import write_ct_series
from vitdesk.jobs import NEVER, CancelToken, Listener, Progress, emit

CLASSES = ("normal", "lesion")
README_MARKER = "vitdesk synthetic sample"

# The finding: round metastases. History: lesions on one contiguous slice range, lung
# first (liver only where the lungs could not hold them), were learnt mostly through a
# shortcut in the demo: nodules only occurred on lung levels, so "is this a lung-level
# slice" predicted the label (slice AUC ~0.8 but held-out patient AUC 0.45-0.96
# depending on the sample seed; attention on the spine and mediastinum). Positive
# patients now carry lung AND liver metastases, each organ its own contiguous slice
# range (30-45 % of the series), so the chance of a lesion is about the same at every
# level and only the lesion itself tells lesion slices apart. Radii 18-28 mm (3.6-5.6 cm
# masses, still plausible metastases) are 6-9 px across at the demo's 64 px; liver
# lesions are near water (-15-0 HU, 55-80 HU below the liver) so they stay visible in a
# soft-tissue window through the 10-18 HU noise. Radius in mm; span as a fraction of
# the series' slices.
LESION_RADIUS_MM = {"lung": (18.0, 28.0), "liver": (18.0, 28.0)}
LESION_SPAN = (0.3, 0.45)
LESION_COUNT = {"lung": (3, 6), "liver": (2, 4)}  # lesions per organ (min, max)
LESION_HU = {"lung": (25.0, 50.0), "liver": (-15.0, 0.0)}
LESION_ORGANS = ("lung", "liver")  # every positive patient has lesions in each of these

# Tissue codes of the label map used to place lesions inside the right organ.
_AIR, _BODY, _LUNG, _LIVER = 0, 1, 2, 3

_SURNAMES = ("Miller", "Novak", "Garcia", "Okafor", "Lindqvist", "Rossi", "Tanaka", "Dubois",
             "Kowalski", "Haddad", "Moreau", "Jensen", "Silva", "Petrov", "Nguyen", "Schmidt")
_GIVEN_M = ("Adam", "Omar", "Lars", "Paolo", "Kenji", "Jan", "Diego", "Emeka")
_GIVEN_F = ("Anna", "Sofia", "Ingrid", "Mei", "Chloe", "Eva", "Amara", "Lucia")


@dataclass(frozen=True)
class SampleInfo:
    """What :func:`generate_sample` wrote."""

    out_dir: Path
    labels_csv: Path
    n_patients: int
    n_slices_total: int
    n_positive_slices: int
    classes: tuple[str, ...] = CLASSES
    scanner: str | None = None  # scanner profile name; None for the original sample

    def describe(self) -> str:
        site = "" if self.scanner is None else f" (scanner {self.scanner})"
        return (f"wrote {self.n_patients} synthetic CT studies{site}, {self.n_slices_total} "
                f"slices ({self.n_positive_slices} with a lesion) to {self.out_dir}")


@dataclass(frozen=True)
class Lesion:
    """Where the lesion of a positive synthetic patient is (slice indices apex first)."""

    kind: str  # "lung" | "liver"
    first: int  # first slice index (inclusive)
    last: int  # last slice index (inclusive)
    x: float  # centre in mm (image x, y)
    y: float
    radius: float  # in-plane radius (mm) at the middle slice
    hu: float


@dataclass(frozen=True)
class ScannerProfile:
    """How one synthetic scanner acquires and reconstructs (what differs between sites)."""

    name: str
    manufacturer: str  # (0008,0070)
    model: str  # (0008,1090) Manufacturer's Model Name
    kernel: str  # (0018,1210) Convolution Kernel
    noise_hu: tuple[float, float]  # per-patient noise SD drawn from this range (HU)
    noise_corr_px: float  # noise correlation length (px): larger = blotchier texture
    # soft kernel: Gaussian PSF sigma in px (these matrices have 2.5-4 mm pixels, so a
    # PSF in mm would vanish below one pixel)
    blur_px: float
    sharpen: float  # sharp kernel: unsharp-mask amount (edge overshoot)
    hu_offset: float  # calibration offset added to every voxel (HU)
    thickness_mm: float  # (0018,0050) Slice Thickness; thick slabs average through z
    fov_scale: float  # reconstruction field of view relative to the default


# Three sites that differ in every acquisition property at once, as real sites do: A is
# close to the default sample; B a sharp bone-like kernel with high, fine-grained noise,
# a +25 HU calibration drift, thin slices and a wide FOV; C a smooth kernel with low,
# coarse noise, -20 HU drift, thick slabs and a tight FOV.
SCANNERS: dict[str, ScannerProfile] = {
    "A": ScannerProfile("A", "vitdesk synthetic", "Synthetic CT A", "STANDARD",
                        (10.0, 14.0), 0.7, 0.0, 0.0, 0.0, 2.5, 1.0),
    "B": ScannerProfile("B", "vitdesk synthetic", "Synthetic CT B", "SHARP",
                        (22.0, 28.0), 0.45, 0.0, 0.8, 25.0, 1.0, 1.15),
    "C": ScannerProfile("C", "vitdesk synthetic", "Synthetic CT C", "SMOOTH",
                        (6.0, 9.0), 1.4, 1.0, 0.0, -20.0, 5.0, 0.9),
}


def scanner_profile(name: str) -> ScannerProfile:
    """The profile called ``name`` (case-insensitive); a :class:`DataError` names the
    choices otherwise."""
    profile = SCANNERS.get(str(name).strip().upper())
    if profile is None:
        raise DataError(f"unknown scanner profile '{name}': use one of "
                        f"{', '.join(SCANNERS)}")
    return profile


class _Canvas:
    """A 2-D HU image plus a tissue label map, painted with soft-edged ellipses."""

    def __init__(self, size: int, px_mm: float) -> None:
        self.size = size
        self.px = px_mm
        self.hu = np.full((size, size), -1000.0, dtype=np.float32)
        self.lab = np.zeros((size, size), dtype=np.int8)
        # pixel centres in mm from the image centre; +x patient left, +y posterior
        c = (np.arange(size, dtype=np.float32) - (size - 1) / 2.0) * px_mm
        self.coord = c

    def _box(self, cx: float, cy: float, r: float) -> tuple[slice, slice] | None:
        n, px = self.size, self.px
        half = (n - 1) / 2.0
        x0 = max(int(np.floor((cx - r) / px + half)) - 1, 0)
        x1 = min(int(np.ceil((cx + r) / px + half)) + 2, n)
        y0 = max(int(np.floor((cy - r) / px + half)) - 1, 0)
        y1 = min(int(np.ceil((cy + r) / px + half)) + 2, n)
        if x0 >= x1 or y0 >= y1:
            return None
        return slice(y0, y1), slice(x0, x1)

    def alpha(self, cx: float, cy: float, ax: float, ay: float, angle: float = 0.0):
        """Coverage in [0, 1] of an ellipse (mm), ~1 px soft edge, on its bounding box."""
        if ax <= 0 or ay <= 0:
            return None, None
        box = self._box(cx, cy, max(ax, ay))
        if box is None:
            return None, None
        ys, xs = box
        dx = self.coord[xs][None, :] - cx
        dy = self.coord[ys][:, None] - cy
        if angle:
            ca, sa = np.cos(angle), np.sin(angle)
            dx, dy = dx * ca + dy * sa, -dx * sa + dy * ca
        r = np.sqrt((dx * (1.0 / ax)) ** 2 + (dy * (1.0 / ay)) ** 2)
        # (1 - r) * min axis approximates the signed distance to the edge in mm
        k = min(ax, ay) / self.px
        a = np.float32(0.5 + k) - np.float32(k) * r
        np.clip(a, 0.0, 1.0, out=a)
        return box, a

    def ellipse(self, cx, cy, ax, ay, value, label=None, angle=0.0, within=None, mask=None):
        """Paint an ellipse of HU ``value``; ``within`` restricts it to tissue codes."""
        box, a = self.alpha(cx, cy, ax, ay, angle)
        if box is None:
            return
        if within is not None:
            a = a * (self.lab[box] == within)
        if mask is not None:
            a = a * mask[box]
        region = self.hu[box]
        region += a * (np.float32(value) - region)
        if label is not None:
            self.lab[box][a > 0.5] = label

    def circle(self, cx, cy, r, value, label=None, within=None):
        self.ellipse(cx, cy, r, r, value, label, within=within)


def _smoothstep(e0: float, e1: float, x: float) -> float:
    t = min(max((x - e0) / (e1 - e0), 0.0), 1.0)
    return t * t * (3 - 2 * t)


def _bump(x: float, a: float, b: float, c: float, d: float) -> float:
    """0 below a, rises to 1 at b, 1 until c, falls to 0 at d."""
    return _smoothstep(a, b, x) * (1.0 - _smoothstep(c, d, x))


class _Patient:
    """Random anatomy of one patient; ``render(t)`` draws the axial slice at level t."""

    def __init__(self, rng: np.random.Generator, sex: str, age: int) -> None:
        u = rng.uniform
        male = sex == "M"
        self.A = u(160, 182) if male else u(145, 168)  # body half-width (mm)
        self.B = u(105, 122) if male else u(96, 114)  # body half-depth (mm)
        self.cx, self.cy = u(-8, 8), u(-12, 4)
        self.fat = u(7, 16) + (6 if not male else 0) + 0.08 * (age - 25)
        self.muscle = u(6, 11) if male else u(5, 9)
        self.lung_hu = u(-870, -830)
        self.aorta_hu = u(250, 300)
        self.liver_hu = u(55, 66)
        self.aorta_r = u(11, 14) + 0.03 * (age - 25)
        self.lung_end = u(0.60, 0.68)  # level of the right lung base
        self.liver_top = u(0.44, 0.52)
        self.heart_shift = u(-6, 10)
        self.rib_phase = u(0, 2 * np.pi, size=8)
        self.rib_angles = np.linspace(0.2, 1.35, 8) + u(-0.05, 0.05, size=8)
        self.stomach_air = u(0.15, 0.45)
        # Vessels as straight 3-D segments in normalised lung coordinates.
        nv = 34
        self.vessels = []
        for side in (-1, 1):
            for _ in range(nv):
                t0 = u(0.05, 0.45)
                t1 = min(t0 + u(0.1, 0.4), 0.7)
                start = np.array([u(-0.7, -0.2), u(-0.3, 0.3)])  # near the hilum
                end = np.array([u(-0.4, 0.9), u(-0.9, 0.9)])
                self.vessels.append((side, t0, t1, start, end, u(1.2, 2.8)))
        self.bowel = []
        for _ in range(14):
            t0 = u(self.liver_top + 0.12, 0.95)
            self.bowel.append((u(-0.25, 0.65), u(-0.85, 0.25), u(-0.25, 0.65), u(-0.85, 0.25),
                               t0, t0 + u(0.1, 0.35), u(7, 14),
                               float(rng.choice([-900.0, 12.0, 12.0, -120.0]))))
        self.liver_vessels = [
            (u(-0.6, 0.6), u(-0.6, 0.6), u(-0.6, 0.6), u(-0.6, 0.6), u(1.5, 3.5))
            for _ in range(8)
        ]

    # -- geometry helpers shared with lesion placement --------------------------
    def body_axes(self, t: float) -> tuple[float, float]:
        return self.A * (0.94 + 0.1 * t), self.B * (0.93 + 0.12 * t)

    def lung_geometry(self, t: float, side: int):
        """(cx, cy, ax, ay) of one lung at level t (side -1: patient right, image left)."""
        a, b = self.body_axes(t)
        inner_a, inner_b = a - self.fat - self.muscle, b - self.fat - self.muscle
        end = self.lung_end + (0.06 if side > 0 else 0.0)
        s = 0.45 + 0.55 * _smoothstep(0.0, 0.25, t)
        s *= 1.0 - _smoothstep(end - 0.22, end, t)
        cx = self.cx + side * inner_a * 0.5
        cy = self.cy + inner_b * 0.06
        return cx, cy, inner_a * 0.48 * s, inner_b * 0.86 * s

    def render(self, t: float, canvas: _Canvas) -> None:
        c = canvas
        a, b = self.body_axes(t)
        cx, cy = self.cx, self.cy
        ia, ib = a - self.fat - self.muscle, b - self.fat - self.muscle
        # table under the patient (carbon top + foam pad)
        table_y = cy + b + 4
        c.ellipse(cx * 0.2, table_y + 60, a * 1.6, 60, -700)
        c.ellipse(cx * 0.2, table_y + 70, a * 1.6, 62, 150)
        c.ellipse(cx * 0.2, table_y + 80, a * 1.7, 64, -1000)
        # body wall: fat, muscle, inner soft tissue
        c.ellipse(cx, cy, a, b, -100, _BODY)
        c.ellipse(cx, cy, a - self.fat, b - self.fat, 55)
        c.ellipse(cx, cy, ia, ib, 35)
        spine_y = cy + ib - 38
        # posterior paraspinal muscles separated by a fat line
        for side in (-1, 1):
            c.ellipse(cx + side * 30, spine_y + 30, 26, 20, -90)
            c.ellipse(cx + side * 30, spine_y + 30, 23, 17, 52)

        if t > self.liver_top + 0.08:
            # upper abdomen: visceral fat with bowel loops (lungs and organs paint over it)
            c.ellipse(cx, cy, ia * 0.94, ib * 0.9, -95)
            for x0, y0, x1, y1, b0, b1, r, content in self.bowel:
                if b0 <= t <= b1:
                    f = (t - b0) / (b1 - b0)
                    bx, by = cx + (x0 + f * (x1 - x0)) * ia, cy + (y0 + f * (y1 - y0)) * ib
                    c.circle(bx, by, r, 30)
                    c.circle(bx, by, r - 2.5, content)
        lung_w = _bump(t, -1, 0, self.lung_end - 0.02, self.lung_end + 0.08)
        if lung_w > 0:
            for side in (-1, 1):
                lx, ly, lax, lay = self.lung_geometry(t, side)
                c.ellipse(lx, ly, lax, lay, self.lung_hu, _LUNG)
                # dependent (posterior) lung is denser in supine patients
                c.ellipse(lx, ly + lay * 0.55, lax * 0.9, lay * 0.45, self.lung_hu + 45,
                          within=_LUNG)
            self._lung_vessels(t, c)
            # mediastinum: fat, then heart, great vessels, airway
            med_a, med_b = ia * 0.23, ib * 0.7
            c.ellipse(cx, cy - ib * 0.1, med_a, med_b, -85, _BODY)
            heart = _bump(t, 0.22, 0.36, 0.6, 0.72)
            if heart > 0:
                hx, hy = cx + self.heart_shift + 12, cy - ib * 0.12
                c.ellipse(hx, hy, ia * 0.36 * heart, ib * 0.5 * heart, 42, _BODY, angle=-0.5)
                c.ellipse(hx + 6, hy + 4, ia * 0.2 * heart, ib * 0.28 * heart, 140, angle=-0.5)
            if t < 0.45:  # ascending aorta, pulmonary trunk, SVC
                c.circle(cx + 4, cy - ib * 0.32, self.aorta_r * 1.15, self.aorta_hu)
                if 0.18 < t < 0.38:
                    c.circle(cx + 28, cy - ib * 0.25, 13, 210)
                c.circle(cx - 24, cy - ib * 0.3, 9, 160)
            if t < 0.12:  # aortic arch
                c.ellipse(cx + 10, cy - ib * 0.15, self.aorta_r, ib * 0.3, self.aorta_hu,
                          angle=-0.3)
            if t < 0.3:  # trachea
                c.circle(cx, cy - ib * 0.12, 11, 30)
                c.circle(cx, cy - ib * 0.12, 8.5, -1000)
            elif t < 0.38:  # main bronchi
                for side in (-1, 1):
                    c.circle(cx + side * 16, cy - ib * 0.08, 6.5, -990)
            c.circle(cx + 6, spine_y - 26, 6, 45)  # oesophagus
        self._abdomen(t, c, ia, ib, spine_y)
        # descending aorta in front of the spine, all levels
        c.circle(cx + 20, spine_y - 24, self.aorta_r, self.aorta_hu)
        self._bones(t, c, a, b, ia, ib, spine_y)

    def _lung_vessels(self, t: float, c: _Canvas) -> None:
        for side, t0, t1, start, end, r in self.vessels:
            if not t0 <= t <= t1:
                continue
            f = (t - t0) / (t1 - t0)
            lx, ly, lax, lay = self.lung_geometry(t, side)
            if lax <= 0:
                continue
            p = start + f * (end - start)
            # medial (hilum) side of each lung is toward the midline
            vx = lx - side * p[0] * lax
            vy = ly + p[1] * lay
            c.circle(vx, vy, r * (1.0 - 0.55 * f), 35, within=_LUNG)

    def _abdomen(self, t: float, c: _Canvas, ia: float, ib: float, spine_y: float) -> None:
        cx, cy = self.cx, self.cy
        g = _smoothstep(self.liver_top, self.liver_top + 0.25, t)
        if g > 0:
            # liver in the right upper quadrant (image left), left lobe across the midline
            lx, ly, lax, lay = cx - ia * 0.32, cy + ib * 0.08, ia * 0.62 * g, ib * 0.78 * g
            c.ellipse(lx, ly, lax, lay, self.liver_hu, _LIVER)
            lobe = _smoothstep(self.liver_top + 0.15, self.liver_top + 0.35, t)
            if lobe > 0:
                c.ellipse(cx + ia * 0.05, cy - ib * 0.42, ia * 0.42 * lobe, ib * 0.3 * lobe,
                          self.liver_hu, _LIVER, angle=0.25)
            for x0, y0, x1, y1, r in self.liver_vessels:
                f = g
                vx = lx + (x0 + f * (x1 - x0)) * lax * 0.7
                vy = ly + (y0 + f * (y1 - y0)) * lay * 0.7
                c.circle(vx, vy, r, self.liver_hu + 45, within=_LIVER)
        s = _smoothstep(self.liver_top + 0.12, self.liver_top + 0.3, t)
        if s > 0:
            # stomach (left, anterior) with an anterior air cap; spleen posterior left
            sx, sy = cx + ia * 0.42, cy - ib * 0.15
            c.ellipse(sx, sy, ia * 0.26 * s, ib * 0.34 * s, 15, _BODY)
            c.ellipse(sx, sy - ib * 0.34 * s * (1 - self.stomach_air), ia * 0.22 * s,
                      ib * 0.34 * s * self.stomach_air, -950)
            c.ellipse(cx + ia * 0.62, cy + ib * 0.38, ia * 0.2 * s, ib * 0.3 * s, 48, _BODY,
                      angle=0.6)
        k = _smoothstep(0.82, 0.95, t)
        if k > 0:
            for side in (-1, 1):
                kx, ky = cx + side * 60, spine_y + 5
                c.ellipse(kx, ky, 24 * k, 32 * k, 160, _BODY, angle=side * 0.4)
                c.ellipse(kx, ky, 12 * k, 18 * k, 35, angle=side * 0.4)

    def _bones(self, t, c, a, b, ia, ib, spine_y) -> None:
        cx = self.cx
        # vertebral body: cortical rim, cancellous core; canal and posterior arch
        c.ellipse(cx, spine_y, 21, 17, 750, _BODY)
        c.ellipse(cx, spine_y, 18, 14, 280)
        c.circle(cx, spine_y + 26, 13, 650)
        c.circle(cx, spine_y + 26, 8.5, 15)
        c.ellipse(cx, spine_y + 46, 5, 12, 650)
        for side in (-1, 1):
            c.ellipse(cx + side * 24, spine_y + 30, 14, 5, 600, angle=side * 0.5)
        if t < 0.85:  # ribs: small cortical ovals along the chest wall
            for ang, ph in zip(self.rib_angles, self.rib_phase, strict=True):
                if np.cos(ph + t * 9.0) < -0.55:  # a rib is not cut at every level
                    continue
                for side in (-1, 1):
                    th = np.pi / 2 - side * (ang + 0.25 * np.sin(ph + t * 3))
                    rx = cx + np.cos(th) * (ia + self.muscle * 0.35)
                    ry = self.cy + np.sin(th) * (ib + self.muscle * 0.35)
                    # one oval: the marrow is below the resolution of these matrices
                    c.ellipse(rx, ry, 6.5, 3.8, 600, _BODY, angle=th + np.pi / 2)
        if 0.08 < t < 0.62:  # sternum
            sy = self.cy - ib - self.muscle * 0.3
            c.ellipse(cx, sy, 14, 6, 650, _BODY)
            c.ellipse(cx, sy, 11, 3.5, 220)


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float,
           corr: float = 0.7) -> np.ndarray:
    """Gaussian noise with correlation length ``corr`` px, scaled to std ``sigma`` HU."""
    white = rng.standard_normal(shape).astype(np.float32)
    smooth = cv2.GaussianBlur(white, (0, 0), corr)
    return smooth * np.float32(sigma / max(float(smooth.std()), 1e-6))


def _place_lesions(rng, kind: str, labs: np.ndarray, px_mm: float, n: int,
                   scale: float = 1.0) -> list[Lesion]:
    """Choose one slice span and 1+ non-overlapping lesion centres inside the organ on
    every slice of the span (empty list when the organ is too small). ``scale``
    shrinks the radii (the fallback for tiny matrices)."""
    organ = _LUNG if kind == "lung" else _LIVER
    lo, hi = LESION_COUNT[kind]
    count = int(rng.integers(lo, hi + 1))
    radii = [scale * float(rng.uniform(*LESION_RADIUS_MM[kind])) for _ in range(count)]
    span = min(n, max(2, int(round(n * rng.uniform(*LESION_SPAN)))))
    area = (labs == organ).reshape(n, -1).sum(1) * px_mm * px_mm
    need = np.pi * (max(radii) + 10) ** 2 * 2  # the organ must be clearly larger
    starts = [s for s in range(n - span + 1) if (area[s:s + span] >= need).all()]
    rng.shuffle(starts)
    size = labs.shape[1]
    coord = (np.arange(size) - (size - 1) / 2.0) * px_mm
    for s in starts[:6]:
        inter = np.all(labs[s:s + span] == organ, axis=0).astype(np.uint8)
        dist = cv2.distanceTransform(inter, cv2.DIST_L2, 3) * px_mm
        placed: list[Lesion] = []
        for radius in radii:
            ok = dist > radius + 4
            for other in placed:  # keep lesions apart so each stays round and visible
                sep = np.hypot(coord[None, :] - other.x, coord[:, None] - other.y)
                ok &= sep > radius + other.radius + 6
            ys, xs = np.nonzero(ok)
            if len(ys) == 0:
                continue
            i = rng.integers(len(ys))
            hu = rng.uniform(*LESION_HU[kind])
            placed.append(Lesion(kind, s, s + span - 1, float(coord[xs[i]]),
                                 float(coord[ys[i]]), radius, float(hu)))
        if placed:
            return placed
    return []


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"sample output '{out}' is an existing file: give a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        readme = out / "README.txt"
        if not (readme.is_file() and README_MARKER in readme.read_text(errors="replace")):
            raise DataError(
                f"sample output '{out}' is a non-empty folder that is not a vitdesk sample: "
                "give a new or empty folder"
            )


def _readme(n_patients: int, n_slices: int, size: int, seed: int) -> str:
    return (
        f"{README_MARKER}\n\n"
        "SYNTHETIC DATA. These CT studies were generated by `vitdesk sample`; they are not\n"
        "images of any person. Names, IDs and dates in the DICOM headers are invented (they\n"
        "exist so that de-identification can be exercised). Research and testing use only.\n\n"
        f"patients: {n_patients}, slices per patient: {n_slices}, matrix: {size}x{size}, "
        f"seed: {seed}\n"
        "labels.csv: one row per slice file, path relative to this folder, label `normal`\n"
        "or `lesion` (round lung nodules or hypodense liver lesions on that slice).\n"
    )


@dataclass
class SyntheticCase:
    """One rendered patient before it is written (also used by tests).

    ``hu`` and ``labels`` run apex (index 0) to abdomen; ``tissue`` is the label
    map used to place lesions (0 air, 1 body, 2 lung, 3 liver), before the lesion.
    """

    hu: np.ndarray
    tissue: np.ndarray
    labels: list[str]
    lesions: list[Lesion]  # empty for a normal patient; one slice range per organ
    px_mm: float
    dz: float
    sex: str
    age: int


def render_case(seed: int, index: int, sex: str, age: int, positive: bool, slices: int = 24,
                size: int = 128, noise: bool = True,
                scanner: ScannerProfile | None = None) -> SyntheticCase:
    """Render patient ``index`` of the sample with ``seed``.

    Anatomy, lesion and noise draw from separate random streams, so the same
    patient rendered with and without a lesion differs only inside the lesion, and
    the same patient acquired on another ``scanner`` has the same anatomy.
    ``scanner=None`` is the original sample, unchanged.
    """
    rng = np.random.default_rng([seed, index + 1, 0])
    anatomy = _Patient(rng, sex, age)
    fov_raw = anatomy.A * 2.08 * rng.uniform(1.08, 1.18)
    if scanner is None:
        fov = float(np.clip(fov_raw, 300.0, 440.0))
    else:
        fov = float(np.clip(fov_raw * scanner.fov_scale, 260.0, 500.0))
    px_mm = fov / size
    coverage = rng.uniform(250.0, 300.0)
    dz = round(coverage / slices, 2) if slices > 1 else 5.0
    t0, t1 = rng.uniform(0.0, 0.04), rng.uniform(0.96, 1.0)
    levels = np.linspace(t0, t1, slices) if slices > 1 else np.array([0.4])

    hu = np.empty((slices, size, size), dtype=np.float32)
    tissue = np.empty((slices, size, size), dtype=np.int8)
    # a thick slab averages the anatomy across its thickness (partial volume); thin
    # slices (and the default sample) are one plane
    slab = [0.0]
    if scanner is not None and scanner.thickness_mm > 2.5:
        step = scanner.thickness_mm / 3.0 / coverage  # in level units (t spans ~coverage)
        slab = [-step, 0.0, step]
    for k, t in enumerate(levels):
        canvas = _Canvas(size, px_mm)
        anatomy.render(float(t), canvas)
        hu[k], tissue[k] = canvas.hu, canvas.lab
        for dt in slab:
            if dt:
                extra = _Canvas(size, px_mm)
                anatomy.render(float(t + dt), extra)
                hu[k] += extra.hu
        if len(slab) > 1:
            hu[k] /= np.float32(len(slab))

    lesions: list[Lesion] = []
    labels = ["normal"] * slices
    if positive:
        lrng = np.random.default_rng([seed, index + 1, 1])
        for kind in LESION_ORGANS:
            # tiny matrices (tests) may have no room for full-size lesions: smaller ones then
            for scale in (1.0, 0.6):
                placed = _place_lesions(lrng, kind, tissue, px_mm, slices, scale)
                if placed:
                    lesions += placed
                    break
    for les in lesions:
        mid = (les.first + les.last) / 2.0
        half = (les.last - les.first) / 2.0 + 0.5
        for k in range(les.first, les.last + 1):
            # roughly spherical profile, never below 60 % of the radius
            r = les.radius * max(0.6, float(np.sqrt(1 - ((k - mid) / (half + 0.5)) ** 2)))
            canvas = _Canvas(size, px_mm)
            canvas.hu, canvas.lab = hu[k], tissue[k].copy()
            canvas.circle(les.x, les.y, r, les.hu)
            labels[k] = "lesion"
    if scanner is not None:
        _reconstruct(hu, scanner)
    if noise:
        nrng = np.random.default_rng([seed, index + 1, 2])
        if scanner is None:
            sigma = nrng.uniform(10.0, 18.0)
            for k in range(slices):
                hu[k] += _noise(nrng, (size, size), sigma)
        else:
            sigma = nrng.uniform(*scanner.noise_hu)
            for k in range(slices):
                hu[k] += _noise(nrng, (size, size), sigma, scanner.noise_corr_px)
    if scanner is not None and scanner.hu_offset:
        hu += np.float32(scanner.hu_offset)
    np.clip(hu, -1024.0, 3071.0, out=hu)
    return SyntheticCase(hu, tissue, labels, lesions, px_mm, dz, sex, age)


def _reconstruct(hu: np.ndarray, scanner: ScannerProfile) -> None:
    """Apply the profile's reconstruction kernel to the noise-free slices in place: a
    soft kernel blurs edges (Gaussian PSF), a sharp one overshoots them (unsharp mask)."""
    for k in range(hu.shape[0]):
        if scanner.blur_px > 0:
            hu[k] = cv2.GaussianBlur(hu[k], (0, 0), scanner.blur_px)
        if scanner.sharpen > 0:
            low = cv2.GaussianBlur(hu[k], (0, 0), 1.0)
            hu[k] += np.float32(scanner.sharpen) * (hu[k] - low)


def sample_demographics(patients: int, seed: int) -> tuple[list[str], list[int], set[int]]:
    """Sexes (balanced M/F), ages 25-85 and the positive patients (about half, more often
    older ones) of a sample."""
    root = np.random.default_rng([seed, 0])
    ages = root.integers(25, 86, size=patients)
    sexes = np.array(["M", "F"] * ((patients + 1) // 2))[:patients]
    root.shuffle(sexes)
    weights = 0.7 + 0.6 * (ages - 25) / 60.0
    n_pos = patients // 2 if patients > 1 else 0
    chosen = root.choice(patients, size=n_pos, replace=False, p=weights / weights.sum())
    return [str(x) for x in sexes], [int(a) for a in ages], {int(i) for i in chosen}


def _synthetic_phi(seed: int, index: int, sex: str, age: int) -> tuple[dict, dict]:
    """Invented patient identity and study data (PHI, kept inside the DICOM headers)."""
    rng = np.random.default_rng([seed, index + 1, 3])
    given = _GIVEN_M if sex == "M" else _GIVEN_F
    year = 2023 + int(rng.integers(0, 2))
    study_date = f"{year}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    birth = f"{year - age}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    patient = {
        "PatientName": f"{rng.choice(_SURNAMES)}^{rng.choice(given)}",
        "PatientID": f"SYN{int(rng.integers(100000, 999999))}",
        "PatientBirthDate": birth,
        "PatientSex": sex,
        "PatientAge": f"{age:03d}Y",
    }
    extra = {
        "StudyDate": study_date, "SeriesDate": study_date, "ContentDate": study_date,
        "AcquisitionDate": study_date,
        "AccessionNumber": f"A{int(rng.integers(1000000, 9999999))}",
        "InstitutionName": "Synthetic General Hospital",
        "ReferringPhysicianName": "Synthetic^Referrer",
        "StudyDescription": "CT chest upper abdomen with contrast",
        "ConvolutionKernel": "STANDARD",
        "ContrastBolusAgent": "synthetic iodinated contrast",
    }
    return patient, extra


def generate_sample(
    out_dir: str | Path,
    patients: int = 24,
    slices: int = 24,
    size: int = 128,
    seed: int = 0,
    cancel: CancelToken = NEVER,
    listener: Listener | None = None,
    scanner: str | None = None,
) -> SampleInfo:
    """Write synthetic CT studies and a slice-level ``labels.csv``.

    Args:
        out_dir: new or empty folder (or a previous sample, which is replaced).
        patients: number of patients (one study, one axial series each).
        slices: slices per series (apex of the lungs to the upper abdomen).
        size: rows = columns of every slice.
        seed: all content, UIDs and synthetic PHI derive from it.
        cancel: checked once per patient.
        listener: receives :class:`vitdesk.jobs.Progress` events (task ``"sample"``).
        scanner: a :data:`SCANNERS` profile name (``"A"``, ``"B"``...) to acquire the
            same patients as that site's scanner would; None: the original sample.

    Returns:
        A :class:`SampleInfo` with the counts and the labels file.
    """
    if patients < 1 or slices < 1 or size < 16:
        raise DataError(
            f"sample needs at least 1 patient, 1 slice and 16 px (got {patients}, {slices}, "
            f"{size})"
        )
    profile = None if scanner is None else scanner_profile(scanner)
    out = Path(out_dir)
    _check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("case_*"):  # replace a previous sample, never anything else
        if old.is_dir():
            shutil.rmtree(old)
    sexes, ages, positive = sample_demographics(patients, seed)

    width = max(3, len(str(patients)))
    rows: list[tuple[str, str]] = []
    n_positive_slices = 0
    emit(listener, Progress("sample", 0, patients, "generating"))
    for i in range(patients):
        cancel.check()
        case = render_case(seed, i, sexes[i], ages[i], i in positive, slices, size,
                           scanner=profile)
        patient, extra = _synthetic_phi(seed, i, sexes[i], ages[i])
        if profile is not None:
            extra.update(Manufacturer=profile.manufacturer,
                         ManufacturerModelName=profile.model,
                         ConvolutionKernel=profile.kernel,
                         SliceThickness=f"{profile.thickness_mm:g}")
        name = f"case_{i + 1:0{width}d}"
        # Files go from the most inferior slice up, so z (superior in LPS) grows with the
        # instance number as on most scanners; the rendered anatomy runs apex first.
        hu, labels = case.hu[::-1], case.labels[::-1]
        px = case.px_mm
        paths = write_ct_series(
            out / name / "series_1", hu, spacing=(case.dz, px, px),
            origin=(-(size - 1) / 2.0 * px, -(size - 1) / 2.0 * px, -case.dz * (slices - 1)),
            patient=patient, series_description="Synthetic axial chest/abdomen",
            window=(400.0, 40.0), extra=extra, rng_seed=f"vitdesk-sample-{seed}-{i}",
        )
        for path, label in zip(paths, labels, strict=True):
            rows.append((path.relative_to(out).as_posix(), label))
        n_positive_slices += labels.count("lesion")
        emit(listener, Progress("sample", i + 1, patients, name))

    labels_csv = out / "labels.csv"
    with open(labels_csv, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    readme = _readme(patients, slices, size, seed)
    if profile is not None:
        readme += (f"scanner profile: {profile.name} ({profile.model}, kernel {profile.kernel}, "
                   f"{profile.thickness_mm:g} mm slices)\n")
    (out / "README.txt").write_text(readme)
    return SampleInfo(out, labels_csv, patients, len(rows), n_positive_slices, CLASSES,
                      None if profile is None else profile.name)
