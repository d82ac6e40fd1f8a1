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
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset

from vitdesk.imaging.deid import PHI_KEYWORDS, safe_key

FORMAT = 1
_PHI_TAGS = frozenset(t for t in (tag_for_keyword(k) for k in PHI_KEYWORDS) if t is not None)
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
                tag: RawDataElement(tag, vr, len(value), value, 0, implicit, little, True,
                                    False)
                for tag, vr, value in ((int(t), v, bytes.fromhex(h)) for t, v, h in e["el"])
            })
            ds.file_meta = FileMetaDataset()
            if e["ts"]:
                ds.file_meta.TransferSyntaxUID = e["ts"]
            ds.set_original_encoding(implicit, little)
            info = FileHeader(p, ds, e["ts"], e["po"], e["pl"], e["ps"], e["fs"])
        except (ValueError, KeyError, TypeError):  # an entry from an older format
            self.misses += 1
            return None
        object.__setattr__(info, "_cached", True)
        self.hits += 1
        return e["g"], info

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
    """(implicit VR, little endian, [[tag, VR, hex value], ...]) of the non-PHI elements.

    Call right after parsing: pydicom converts an element when it is first read.
    None when an element is no longer raw (pydicom parses some sequences eagerly).
    """
    implicit, little = ds.original_encoding
    if implicit is None:
        return None
    out = []
    for tag in list(ds.keys()):  # keys only: nothing is converted
        if tag in _PHI_TAGS:
            continue
        elem = ds.get_item(tag)
        if not getattr(elem, "is_raw", False) or not isinstance(elem.value, bytes):
            return None
        out.append([int(tag), elem.VR, elem.value.hex()])
    return bool(implicit), bool(little), out
