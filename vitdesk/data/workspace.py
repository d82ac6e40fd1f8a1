"""A workspace: a folder with an SQLite index of series, labels and runs.

``folder/workspace.sqlite`` (stdlib sqlite3, WAL journal, foreign keys on, a
schema version table) holds imported series with their safe metadata and file
lists, patients (safe key, sex, age), classes, labels per series and per slice,
training runs, import errors and small per-workspace settings (JSON values,
see :meth:`Workspace.get_setting`). Every write is its own committed transaction,
so closing the app, or a crash, loses nothing; there is no save button.

No PHI is stored: series, studies and patients are known by
:func:`vitdesk.imaging.deid.safe_key` hashes, metadata is the safe part only
(PHI keywords are dropped even if a caller passes them). File paths are stored
(needed to load the images), relative to the workspace when inside it so the
folder can be moved.

Threads: each thread gets its own connection (the GUI thread reads while a worker
writes; WAL lets readers proceed during a write). Slice indices are positions in
the loaded volume order, which is the order of ``SeriesInfo.files`` (slices
sorted along the slice normal); a slice can also be addressed by its file path.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitdesk.data.label_checks import check_new_class
from vitdesk.data.records import parse_age, parse_sex
from vitdesk.data.workspace_schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION
from vitdesk.errors import DataError
from vitdesk.imaging.deid import PHI_KEYWORDS, key_id, secret_path

DB_NAME = "workspace.sqlite"
HEADER_CACHE = "header_cache.sqlite"  # imaging.header_cache: per-file scan results, no PHI
_PHI = frozenset(PHI_KEYWORDS)
_UNKNOWN = "unknown"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


@dataclass(frozen=True)
class SeriesRow:
    """One imported series (safe data only)."""

    key: str
    patient_key: str
    study_key: str
    modality: str
    description: str
    n_slices: int
    files: tuple[str, ...]
    meta: dict[str, Any] = field(compare=False, hash=False)
    label: str | None = None  # the series-level label, if any


@dataclass(frozen=True)
class PatientRow:
    key: str
    sex: str | None
    age: float | None
    n_series: int


@dataclass(frozen=True)
class RunRow:
    id: int
    path: str
    created: str
    model: str
    metrics: dict[str, Any]


@dataclass(frozen=True)
class LabelImport:
    """Result of :meth:`Workspace.import_labels_csv`."""

    series_labels: int
    slice_labels: int
    unmatched: tuple[str, ...]  # CSV paths that name nothing in the workspace


class Workspace:
    """Handle on a workspace folder. Use :meth:`open`; close with :meth:`close` or ``with``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.db_path = folder / DB_NAME
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    # ----------------------------------------------------------- open / close
    @classmethod
    def open(cls, folder: str | Path, create: bool = True) -> Workspace:
        """Open the workspace in ``folder``; create it (and the folder) when ``create``.

        Raises:
            DataError: the folder is a file, holds no workspace (``create=False``),
                or the database is unreadable or from a newer vitdesk.
        """
        folder = Path(folder).expanduser()
        if folder.exists() and not folder.is_dir():
            raise DataError(f"workspace '{folder}' is a file: choose a folder")
        db = folder / DB_NAME
        if not db.is_file():
            if not create:
                raise DataError(
                    f"'{folder}' is not a vitdesk workspace (no {DB_NAME}): "
                    "create one or choose another folder"
                )
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DataError(f"cannot create workspace '{folder}': {exc.strerror}") from None
        ws = cls(folder.resolve())
        try:
            ws._init_schema()
        except DataError:
            ws.close()
            raise
        except sqlite3.DatabaseError as exc:
            ws.close()
            raise DataError(
                f"'{db}' is not a readable workspace database ({exc}): "
                "restore it from a backup or open another folder"
            ) from None
        return ws

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise DataError(f"workspace '{self.folder}' is closed: open it again")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # one connection per thread; check_same_thread=False only so close()
            # can close every thread's connection from the owner thread
            conn = sqlite3.connect(self.db_path, timeout=30.0, check_same_thread=False,
                                   isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed label survives even an OS crash, not just an app crash
            conn.execute("PRAGMA synchronous = FULL")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One committed write transaction (BEGIN IMMEDIATE: writers queue, never deadlock)."""
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _init_schema(self) -> None:
        conn = self._connect()
        # idempotent DDL; executescript manages its own transaction
        conn.executescript(SCHEMA)
        with self._tx() as c:
            row = c.execute("SELECT MAX(version) FROM schema_version").fetchone()
            version = row[0]
            if version is None:
                c.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                c.execute("INSERT OR IGNORE INTO info (key, value) VALUES ('created', ?)",
                          (_now(),))
            elif version > SCHEMA_VERSION:
                raise DataError(
                    f"workspace '{self.folder}' was written by a newer vitdesk (schema "
                    f"{version} > {SCHEMA_VERSION}): update vitdesk to open it"
                )
            elif version < SCHEMA_VERSION:
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    c.execute(MIGRATIONS[step])
                # one row, as in a fresh workspace
                c.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
            self._check_keys(c)

    def _check_keys(self, c: sqlite3.Connection) -> None:
        """Refuse keys made with another secret or scheme: they would silently mis-join.

        The workspace records :func:`~vitdesk.imaging.deid.key_id` (scheme + a tag of
        the secret, not the secret); an empty workspace adopts the current one.
        """
        current = key_id()
        row = c.execute("SELECT value FROM info WHERE key = 'key_id'").fetchone()
        stored = row[0] if row else None
        if stored == current:
            return
        if stored is None and c.execute("SELECT COUNT(*) FROM series").fetchone()[0] == 0:
            c.execute("INSERT OR REPLACE INTO info (key, value) VALUES ('key_id', ?)",
                      (current,))
            return
        origin = ("an older vitdesk (unkeyed hashes)" if stored is None
                  else "another vitdesk installation (another secret)")
        raise DataError(
            f"workspace '{self.folder}' holds patient/series keys made by {origin}: its "
            "labels cannot be matched to the images safely here; use that installation's "
            f"secret (copy it to {secret_path()} or set VITDESK_SECRET_FILE), or re-import "
            "the folders and labels into a new workspace"
        )

    @property
    def schema_version(self) -> int:
        return int(self._connect().execute("SELECT MAX(version) FROM schema_version")
                   .fetchone()[0])

    def close(self) -> None:
        """Close every connection (all threads). Safe to call twice."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()
        self._closed = True

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- settings
    def get_setting(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key`` (as JSON decodes it), or ``default``."""
        r = self._connect().execute("SELECT value_json FROM settings WHERE key = ?",
                                    (key,)).fetchone()
        return default if r is None else json.loads(r[0])

    def set_setting(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable ``value`` under ``key`` (tuples come back as lists).

        Raises:
            DataError: the key is empty or the value is not JSON (e.g. a numpy array, NaN).
        """
        if not isinstance(key, str) or not key.strip():
            raise DataError(f"setting key {key!r} is empty or not text: name the setting")
        try:
            # allow_nan=False: NaN/inf are not JSON and would not read back elsewhere
            text = json.dumps(value, allow_nan=False, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise DataError(f"setting '{key}' of workspace '{self.folder}' is not "
                            f"JSON-serialisable ({exc}): store plain numbers, text, "
                            "lists and dicts") from None
        with self._tx() as c:
            c.execute("INSERT INTO settings (key, value_json) VALUES (?, ?) "
                      "ON CONFLICT(key) DO UPDATE SET value_json = excluded.value_json",
                      (key, text))

    # ----------------------------------------------------------------- paths
    def _store_path(self, path: str | Path) -> str:
        """Stored form of a file path: relative (posix) inside the workspace, else absolute."""
        p = Path(os.path.abspath(Path(path).expanduser()))
        try:
            return p.relative_to(self.folder).as_posix()
        except ValueError:
            return str(p)

    def resolve(self, stored: str) -> str:
        """Absolute path of a stored file path."""
        return stored if os.path.isabs(stored) else str(self.folder / stored)

    # ---------------------------------------------------------------- import
    def header_cache(self) -> Any:
        """This workspace's scan header cache (no PHI): pass it to ``scan_path(cache=)``
        so opening a folder again parses only new or changed files."""
        from vitdesk.imaging.header_cache import HeaderCache

        return HeaderCache(self.folder / HEADER_CACHE)

    def import_scan(self, scan_result: Any) -> int:
        """Index the series of a ``ScanResult`` (duck-typed: ``.series``, ``.errors``).

        Re-importing a series (same key) updates its metadata and file list instead
        of duplicating it; labels are kept. Returns the number of new series.
        """
        series = list(getattr(scan_result, "series", []) or [])
        errors = list(getattr(scan_result, "errors", []) or [])
        new = 0
        now = _now()
        with self._tx() as c:
            for s in series:
                meta = {k: v for k, v in dict(s.meta or {}).items() if k not in _PHI}
                files = [self._store_path(f) for f in s.files]
                n_slices = int(getattr(s, "n_frames", 0) or 0) or len(files)
                sex = parse_sex(meta.get("PatientSex"))
                age = parse_age(meta.get("PatientAge"))
                c.execute(
                    "INSERT INTO patients (key, sex, age) VALUES (?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET sex = COALESCE(excluded.sex, sex), "
                    "age = COALESCE(excluded.age, age)",
                    (s.patient_key, sex, age),
                )
                existed = c.execute("SELECT 1 FROM series WHERE key = ?", (s.key,)).fetchone()
                new += existed is None
                c.execute(
                    "INSERT INTO series (key, patient_key, study_key, modality, description, "
                    "meta_json, n_slices, imported) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET patient_key = excluded.patient_key, "
                    "study_key = excluded.study_key, modality = excluded.modality, "
                    "description = excluded.description, meta_json = excluded.meta_json, "
                    "n_slices = excluded.n_slices",
                    (s.key, s.patient_key, s.study_key, str(s.modality or ""),
                     str(s.description or ""), json.dumps(meta, default=str, sort_keys=True),
                     n_slices, now),
                )
                c.execute("DELETE FROM series_files WHERE series_key = ?", (s.key,))
                c.executemany(
                    "INSERT INTO series_files (series_key, idx, path) VALUES (?, ?, ?)",
                    [(s.key, i, p) for i, p in enumerate(files)],
                )
                # slices beyond a shrunken series cannot keep their labels
                c.execute("DELETE FROM slice_labels WHERE series_key = ? AND slice_index >= ?",
                          (s.key, n_slices))
            c.executemany(
                "INSERT OR IGNORE INTO import_errors (path, reason, seen) VALUES (?, ?, ?)",
                [(self._store_path(e.path), str(e.reason), now) for e in errors],
            )
        return new

    def import_errors(self) -> list[tuple[str, str]]:
        """(path, reason) of every file that could not be imported."""
        rows = self._connect().execute(
            "SELECT path, reason FROM import_errors ORDER BY id").fetchall()
        return [(self.resolve(r["path"]), r["reason"]) for r in rows]

    def remove_series(self, series_key: str) -> None:
        """Forget a series and its labels (the files are not touched)."""
        with self._tx() as c:
            c.execute("DELETE FROM series WHERE key = ?", (series_key,))
            c.execute("DELETE FROM patients WHERE key NOT IN (SELECT patient_key FROM series)")

    # ----------------------------------------------------------------- reads
    def _series_from_row(self, c: sqlite3.Connection, r: sqlite3.Row) -> SeriesRow:
        files = tuple(self.resolve(f["path"]) for f in c.execute(
            "SELECT path FROM series_files WHERE series_key = ? ORDER BY idx", (r["key"],)))
        return SeriesRow(r["key"], r["patient_key"], r["study_key"], r["modality"],
                         r["description"], r["n_slices"], files, json.loads(r["meta_json"]),
                         r["label"])

    def series(self, patient_key: str | None = None) -> list[SeriesRow]:
        """Imported series (optionally of one patient), by patient then description."""
        c = self._connect()
        sql = ("SELECT s.*, l.label FROM series s LEFT JOIN series_labels l "
               "ON l.series_key = s.key")
        args: tuple = ()
        if patient_key is not None:
            sql += " WHERE s.patient_key = ?"
            args = (patient_key,)
        sql += " ORDER BY s.patient_key, s.description, s.key"
        return [self._series_from_row(c, r) for r in c.execute(sql, args).fetchall()]

    def get_series(self, series_key: str) -> SeriesRow:
        """One series by key (DataError if unknown)."""
        c = self._connect()
        r = c.execute("SELECT s.*, l.label FROM series s LEFT JOIN series_labels l "
                      "ON l.series_key = s.key WHERE s.key = ?", (series_key,)).fetchone()
        if r is None:
            raise DataError(f"series {series_key} is not in workspace '{self.folder}': "
                            "import its folder first")
        return self._series_from_row(c, r)

    def patients(self) -> list[PatientRow]:
        rows = self._connect().execute(
            "SELECT p.key, p.sex, p.age, COUNT(s.key) AS n FROM patients p "
            "LEFT JOIN series s ON s.patient_key = p.key GROUP BY p.key ORDER BY p.key"
        ).fetchall()
        return [PatientRow(r["key"], r["sex"], r["age"], r["n"]) for r in rows]

    # --------------------------------------------------------------- classes
    def classes(self) -> list[str]:
        """Class names in the order they were added."""
        return [r[0] for r in self._connect().execute(
            "SELECT name FROM classes ORDER BY position, name")]

    def add_class(self, name: str) -> None:
        """Add a class (no-op if it exists); a near-spelling of a class is refused."""
        name = _check_name(name)
        check_new_class(name, self.classes())
        with self._tx() as c:
            c.execute("INSERT OR IGNORE INTO classes (name, position) VALUES "
                      "(?, (SELECT COALESCE(MAX(position), -1) + 1 FROM classes))", (name,))

    def remove_class(self, name: str) -> int:
        """Remove a class and every label that uses it; returns the labels removed."""
        with self._tx() as c:
            n = c.execute("SELECT (SELECT COUNT(*) FROM series_labels WHERE label = ?) + "
                          "(SELECT COUNT(*) FROM slice_labels WHERE label = ?)",
                          (name, name)).fetchone()[0]
            c.execute("DELETE FROM classes WHERE name = ?", (name,))
        return int(n)

    def rename_class(self, old: str, new: str) -> None:
        """Rename a class; its labels follow (ON UPDATE CASCADE)."""
        new = _check_name(new)
        with self._tx() as c:
            self._require_class(c, old)
            if c.execute("SELECT 1 FROM classes WHERE name = ?", (new,)).fetchone():
                raise DataError(f"class '{new}' already exists: choose another name")
            c.execute("UPDATE classes SET name = ? WHERE name = ?", (new, old))

    def _require_class(self, c: sqlite3.Connection, label: str) -> None:
        if c.execute("SELECT 1 FROM classes WHERE name = ?", (label,)).fetchone() is None:
            known = ", ".join(self.classes()) or "none yet"
            raise DataError(f"unknown class '{label}' (classes: {known}): add the class first")

    # ---------------------------------------------------------------- labels
    def _series_slices(self, c: sqlite3.Connection, series_key: str) -> int:
        r = c.execute("SELECT n_slices FROM series WHERE key = ?", (series_key,)).fetchone()
        if r is None:
            raise DataError(f"series {series_key} is not in workspace '{self.folder}': "
                            "import its folder first")
        return int(r[0])

    def set_series_label(self, series_key: str, label: str) -> None:
        """Label a whole series (slices with their own label keep it)."""
        with self._tx() as c:
            self._series_slices(c, series_key)
            self._require_class(c, label)
            c.execute("INSERT INTO series_labels (series_key, label, updated) VALUES (?, ?, ?) "
                      "ON CONFLICT(series_key) DO UPDATE SET label = excluded.label, "
                      "updated = excluded.updated", (series_key, label, _now()))

    def set_slice_label(self, series_key: str, slice_index: int, label: str) -> None:
        """Label one slice (index in the loaded volume order)."""
        self.set_slice_range_label(series_key, slice_index, slice_index + 1, label)

    def set_slice_range_label(self, series_key: str, start: int, stop: int, label: str) -> None:
        """Label slices ``start`` (inclusive) to ``stop`` (exclusive), one transaction."""
        with self._tx() as c:
            n = self._series_slices(c, series_key)
            if not 0 <= start < stop <= n:
                raise DataError(f"slices {start}..{stop - 1} are outside series {series_key} "
                                f"(0..{n - 1}): choose slices inside the series")
            self._require_class(c, label)
            now = _now()
            c.executemany(
                "INSERT INTO slice_labels (series_key, slice_index, label, updated) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(series_key, slice_index) DO UPDATE SET "
                "label = excluded.label, updated = excluded.updated",
                [(series_key, i, label, now) for i in range(start, stop)],
            )

    def set_slice_label_by_path(self, path: str | Path, label: str) -> None:
        """Label the slice stored in file ``path`` (single-frame files)."""
        key, idx = self.slice_of_path(path)
        self.set_slice_label(key, idx, label)

    def slice_of_path(self, path: str | Path) -> tuple[str, int]:
        """(series key, slice index) of an imported file."""
        r = self._connect().execute(
            "SELECT series_key, idx FROM series_files WHERE path = ? ORDER BY series_key "
            "LIMIT 1", (self._store_path(path),)).fetchone()
        if r is None:
            raise DataError(f"'{path}' is not a slice of any series in workspace "
                            f"'{self.folder}': import its folder first")
        return r["series_key"], int(r["idx"])

    def clear_label(self, series_key: str, slice_index: int | None = None,
                    stop: int | None = None) -> None:
        """Clear the series label (``slice_index`` None), one slice, or slices [index, stop)."""
        with self._tx() as c:
            if slice_index is None:
                c.execute("DELETE FROM series_labels WHERE series_key = ?", (series_key,))
            else:
                end = slice_index + 1 if stop is None else stop
                c.execute("DELETE FROM slice_labels WHERE series_key = ? AND slice_index >= ? "
                          "AND slice_index < ?", (series_key, slice_index, end))

    def series_label(self, series_key: str) -> str | None:
        r = self._connect().execute("SELECT label FROM series_labels WHERE series_key = ?",
                                    (series_key,)).fetchone()
        return None if r is None else r[0]

    def slice_labels(self, series_key: str) -> dict[int, str]:
        """Only the slices labelled one by one."""
        return {int(r[0]): r[1] for r in self._connect().execute(
            "SELECT slice_index, label FROM slice_labels WHERE series_key = ? "
            "ORDER BY slice_index", (series_key,))}

    def labels_for_series(self, series_key: str) -> dict[int, str]:
        """Effective label of every labelled slice: its own label, else the series label."""
        c = self._connect()
        n = self._series_slices(c, series_key)
        own = self.slice_labels(series_key)
        whole = self.series_label(series_key)
        if whole is None:
            return own
        return {i: own.get(i, whole) for i in range(n)}

    def import_labels_csv(self, path: str | Path) -> LabelImport:
        """Apply a labels/manifest CSV (``path,label[,patient_id,sex,age]``).

        A row naming an imported slice file labels that slice; a row naming a folder
        labels every series whose files lie in it. Unknown classes are added. Rows
        naming nothing in the workspace are reported in ``unmatched``.
        """
        from vitdesk.data.workspace_csv import import_labels_csv

        return import_labels_csv(self, path)

    def export_manifest(self, path: str | Path) -> int:
        """Write a manifest CSV (``path,label,sex,age``) of every labelled slice file.

        Paths are relative to the CSV's folder when possible. Multi-frame files are
        written only when all their frames share one label (the format labels files).
        Returns the number of rows.
        """
        from vitdesk.data.workspace_csv import export_manifest

        return export_manifest(self, path)

    # ------------------------------------------------------------------ runs
    def add_run(self, path: str | Path, model: str = "", metrics: dict | None = None,
                created: str | None = None) -> int:
        """Record a training run folder (updates it if already recorded); returns its id."""
        stored = self._store_path(path)
        with self._tx() as c:
            c.execute(
                "INSERT INTO runs (path, created, model, metrics_json) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(path) DO UPDATE SET model = excluded.model, "
                "metrics_json = excluded.metrics_json",
                (stored, created or _now(), model, json.dumps(metrics or {}, default=str)))
            return int(c.execute("SELECT id FROM runs WHERE path = ?", (stored,)).fetchone()[0])

    def runs(self) -> list[RunRow]:
        """Recorded runs, oldest first."""
        return [RunRow(r["id"], self.resolve(r["path"]), r["created"], r["model"],
                       json.loads(r["metrics_json"]))
                for r in self._connect().execute("SELECT * FROM runs ORDER BY created, id")]

    # ---------------------------------------------------------------- counts
    def counts_by_class(self) -> dict[str, int]:
        """Labelled slices per class (every class listed, zero included)."""
        counts = dict.fromkeys(self.classes(), 0)
        for s in self.series():
            for label in self.labels_for_series(s.key).values():
                counts[label] = counts.get(label, 0) + 1
        return counts

    def counts_by_group(self, attribute: str) -> dict[str, dict[str, int]]:
        """Labelled slices per group and class: {group: {class: n}}.

        ``attribute``: ``sex``, ``age`` (decade bands such as ``40-49``), ``patient``,
        ``modality``, or any safe metadata keyword (e.g. ``Manufacturer``).
        Missing values fall in the group ``unknown``.
        """
        patients = {p.key: p for p in self.patients()}
        classes = self.classes()
        out: dict[str, dict[str, int]] = {}
        for s in self.series():
            labels = self.labels_for_series(s.key)
            if not labels:
                continue
            group = self._group_of(s, patients.get(s.patient_key), attribute)
            bucket = out.setdefault(group, dict.fromkeys(classes, 0))
            for label in labels.values():
                bucket[label] = bucket.get(label, 0) + 1
        return dict(sorted(out.items()))

    @staticmethod
    def _group_of(s: SeriesRow, p: PatientRow | None, attribute: str) -> str:
        attr = attribute.strip()
        if attr.lower() == "sex":
            return (p.sex if p and p.sex else _UNKNOWN)
        if attr.lower() in ("age", "age_band"):
            if p is None or p.age is None:
                return _UNKNOWN
            lo = int(p.age // 10 * 10)
            return f"{lo}-{lo + 9}"
        if attr.lower() == "patient":
            return s.patient_key
        if attr.lower() == "modality":
            return s.modality or _UNKNOWN
        if attr in _PHI:
            raise DataError(f"'{attribute}' identifies patients: group by a safe attribute")
        value = s.meta.get(attr)
        return _UNKNOWN if value in (None, "") else str(value)


def _check_name(name: str) -> str:
    text = str(name).strip()
    if not text or "," in text or "\n" in text:
        raise DataError(f"class name '{name}' is empty or has a comma/newline: choose another")
    return text


def open_workspace(folder: str | Path, create: bool = True) -> Workspace:
    """Same as :meth:`Workspace.open`."""
    return Workspace.open(folder, create)


__all__: Sequence[str] = (
    "DB_NAME", "SCHEMA_VERSION", "LabelImport", "PatientRow", "RunRow", "SeriesRow",
    "Workspace", "open_workspace",
)
