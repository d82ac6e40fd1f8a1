"""What a scan learnt about each file, kept on disk so a second scan skips the parse.

:func:`~vitdesk.imaging.scan.scan_path` with a :class:`HeaderCache` looks every
file up by (path, size, modification time); a hit rebuilds the header from the
raw bytes of its elements (no DICOM parse), a miss is parsed and stored. Only the
first file of each series is parsed again, for the identifying metadata the
viewer shows on request: the cache itself holds **no PHI** (no element of
:data:`~vitdesk.imaging.deid.PHI_KEYWORDS`; series are grouped by
:func:`~vitdesk.imaging.deid.safe_key` of their UID). A file with an element
pydicom did not keep raw (some undefined-length sequences) is not cached and is
parsed on every scan.

The workspace keeps one cache in its folder (``Workspace.header_cache()``).
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue

from vitdesk.imaging.deid import PHI_KEYWORDS, safe_key

FORMAT = 2
_PHI_TAGS = frozenset(t for t in (tag_for_keyword(k) for k in PHI_KEYWORDS) if t is not None)
# What loading a slice reads from a scanned header (series metadata comes from the
# series' first file, parsed again): fewer elements, faster rebuilds.
LOADER_KEYWORDS = (
    "SpecificCharacterSet", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation", "NumberOfFrames",
    "RescaleSlope", "RescaleIntercept", "ImagePositionPatient", "ImageOrientationPatient",
    "PixelSpacing", "SliceThickness", "SpacingBetweenSlices", "GantryDetectorTilt",
    "InstanceNumber", "WindowCenter", "WindowWidth", "PixelPaddingValue",
    "PixelPaddingRangeLimit", "ModalityLUTSequence", "SharedFunctionalGroupsSequence",
)
_LOADER_TAGS = frozenset(tag_for_keyword(k) for k in LOADER_KEYWORDS) - _PHI_TAGS
# safe_key may become keyed (per installation or workspace): entries written under
# another key would group files differently, so a changed probe empties the cache.
_PROBE = "vitdesk-header-cache-probe"


class HeaderCache:
    """A SQLite file of per-file scan results (no PHI), keyed by path, size and mtime."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, "
                         "size INTEGER, mtime_ns INTEGER, entry TEXT)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        stamp = f"{FORMAT}:{safe_key(_PROBE)}"
        row = self._db.execute("SELECT value FROM meta WHERE name = 'stamp'").fetchone()
        if row is None or row[0] != stamp:
            self._db.execute("DELETE FROM files")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('stamp', ?)", (stamp,))
        self._db.commit()
        self._pending: list[tuple[str, int, int, str]] = []
        self._metas: dict[str, FileMetaDataset] = {}
        self.hits = self.misses = 0

    def lookup(self, path: str | Path) -> tuple[str, Any] | None:
        """(group key, FileHeader) of an unchanged cached file, else None."""
        from vitdesk.imaging.scan import FileHeader

        p = str(path)
        try:
            st = os.stat(p)
        except OSError:
            return None
        row = self._db.execute("SELECT size, mtime_ns, entry FROM files WHERE path = ?",
                               (p,)).fetchone()
        if row is None or row[0] != st.st_size or row[1] != st.st_mtime_ns:
            self.misses += 1
            return None
        try:
            e = json.loads(row[2])
            implicit, little = bool(e["im"]), bool(e["le"])
            ds = Dataset({
                int(el[0]): RawDataElement(int(el[0]), el[1], len(el[2]) // 2,
                                           bytes.fromhex(el[2]), 0, implicit, little, True,
                                           False)
                if el[2] is not None else
                DataElement(int(el[0]), el[1], el[3][0] if len(el[3]) == 1 else el[3])
                for el in e["el"]
            })
            ds.file_meta = self._file_meta(e["ts"])
            ds.set_original_encoding(implicit, little)
            info = FileHeader(p, ds, e["ts"], e["po"], e["pl"], e["ps"], e["fs"])
            order = e["o"]
            object.__setattr__(info, "_order", (order[0], int(order[1])))
        except (ValueError, KeyError, TypeError):  # an entry from an older format
            self.misses += 1
            return None
        object.__setattr__(info, "_cached", True)
        self.hits += 1
        return e["g"], info

    def _file_meta(self, ts: str) -> FileMetaDataset:
        # one per transfer syntax, shared by the rebuilt headers (only read, never written)
        meta = self._metas.get(ts)
        if meta is None:
            meta = FileMetaDataset()
            if ts:
                meta.TransferSyntaxUID = ts
            self._metas[ts] = meta
        return meta

    def store(self, path: str | Path, group: str, info: Any) -> None:
        """Remember one scanned image file (call :meth:`flush` to write)."""
        raw = getattr(info, "_raw", None)
        if not raw:
            return
        try:
            st = os.stat(info.path)
        except OSError:
            return
        entry = {"g": group, "ts": info.transfer_syntax, "po": info.pixel_offset,
                 "pl": info.pixel_length, "ps": info.pixel_start, "fs": info.file_size,
                 "o": list(getattr(info, "_order", (None, 0))),
                 "im": raw[0], "le": raw[1], "el": raw[2]}
        self._pending.append((str(path), st.st_size, st.st_mtime_ns, json.dumps(entry)))

    def flush(self) -> None:
        if self._pending:
            self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)",
                                 self._pending)
            self._db.commit()
            self._pending.clear()

    def close(self) -> None:
        self.flush()
        self._db.close()

    def __enter__(self) -> HeaderCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def raw_elements(ds: Dataset) -> tuple[bool, bool, list] | None:
    """(implicit VR, little endian, [[tag, VR, hex value (, texts)], ...]) for the loader.

    Only :data:`LOADER_KEYWORDS` are kept, none of them PHI.

    Call right after parsing: pydicom converts an element when it is first read.
    None when an element is no longer raw (pydicom parses some sequences eagerly).
    """
    implicit, little = ds.original_encoding
    if implicit is None:
        return None
    out = []
    for tag in list(ds.keys()):  # keys only: nothing is converted
        if tag not in _LOADER_TAGS:
            continue
        elem = ds.get_item(tag)
        if getattr(elem, "is_raw", False) and isinstance(elem.value, bytes):
            out.append([int(tag), elem.VR, elem.value.hex()])
            continue
        # pydicom converts (0008,0005) Specific Character Set while reading: keep text
        value = elem.value
        texts = [value] if isinstance(value, str) else list(value) if isinstance(
            value, MultiValue | list) else None
        if texts is None or not all(isinstance(v, str) for v in texts):
            return None
        out.append([int(tag), elem.VR, None, texts])
    return bool(implicit), bool(little), out
