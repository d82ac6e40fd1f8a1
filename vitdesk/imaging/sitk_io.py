"""Volumes in formats SimpleITK reads (NIfTI, MetaImage, NRRD) as :class:`Volume`.

SimpleITK orders sizes and spacing (x, y, z) and its numpy view (z, y, x); the
Volume keeps the numpy order for arrays and spacing and the patient order
(x, y, z) for the origin. Values are taken as HU as stored (after the NIfTI
scl_slope/scl_inter scaling SimpleITK applies). These formats carry no patient
identity, so ``phi`` stays empty.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vitdesk.errors import LoadError
from vitdesk.imaging.deid import safe_key
from vitdesk.imaging.volume import Volume

SUFFIX_FORMATS = {
    ".nii": "NIfTI", ".nii.gz": "NIfTI", ".mha": "MetaImage", ".mhd": "MetaImage",
    ".nrrd": "NRRD", ".nhdr": "NRRD",
}


def _format_of(path: Path) -> str:
    low = path.name.lower()
    for suffix, fmt in SUFFIX_FORMATS.items():
        if low.endswith(suffix):
            return fmt
    return "image"


def load_sitk(path: str | Path) -> Volume:
    """Read a NIfTI / MHA / MHD / NRRD file into a float32 HU :class:`Volume`.

    Raises:
        LoadError: the file is missing, unreadable, or not a 2-D/3-D scalar image.
    """
    import SimpleITK as sitk  # lazy: only needed for these formats

    p = Path(path)
    if not p.is_file():
        raise LoadError(f"{p}: no such file; check the path")
    fmt = _format_of(p)
    try:
        img = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise LoadError(
            f"{p}: cannot read as {fmt} ({first}); check the file is complete"
        ) from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise LoadError(
            f"{p}: {img.GetNumberOfComponentsPerPixel()} components per voxel; "
            "vitdesk loads scalar (greyscale) volumes only"
        )
    dim = img.GetDimension()
    if dim not in (2, 3):
        raise LoadError(f"{p}: {dim}-D image; vitdesk loads 2-D or 3-D volumes")
    hu = sitk.GetArrayFromImage(img).astype(np.float32, copy=False)
    spacing = tuple(float(s) for s in img.GetSpacing())
    origin = tuple(float(o) for o in img.GetOrigin())
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(dim, dim)
    if dim == 2:
        hu = hu[np.newaxis]
        spacing = (*spacing, 1.0)
        origin = (*origin, 0.0)
        d3 = np.eye(3)
        d3[:2, :2] = direction
        direction = d3
    meta = {"Modality": "CT", "SeriesDescription": p.name, "Format": fmt,
            "Rows": int(hu.shape[1]), "Columns": int(hu.shape[2])}
    z0 = origin[2]
    return Volume(
        hu=np.ascontiguousarray(hu),
        spacing=(spacing[2], spacing[1], spacing[0]),
        origin=origin,  # type: ignore[arg-type]
        direction=direction,
        meta=meta,
        phi={},
        key=safe_key(f"file:{p.resolve()}"),
        slice_positions=z0 + np.arange(hu.shape[0]) * spacing[2],
        source_files=[str(p)] * hu.shape[0],
    )
