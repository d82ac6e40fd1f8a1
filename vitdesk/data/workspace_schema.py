"""The workspace database's schema and its upgrades (see :mod:`vitdesk.data.workspace`)."""

from __future__ import annotations

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS patients (
    key TEXT PRIMARY KEY,
    sex TEXT,
    age REAL
);
CREATE TABLE IF NOT EXISTS series (
    key TEXT PRIMARY KEY,
    patient_key TEXT NOT NULL REFERENCES patients(key) ON DELETE CASCADE,
    study_key TEXT NOT NULL,
    modality TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    meta_json TEXT NOT NULL DEFAULT '{}',
    n_slices INTEGER NOT NULL,
    imported TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS series_files (
    series_key TEXT NOT NULL REFERENCES series(key) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    path TEXT NOT NULL,
    PRIMARY KEY (series_key, idx)
);
CREATE INDEX IF NOT EXISTS series_files_path ON series_files(path);
CREATE TABLE IF NOT EXISTS classes (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS series_labels (
    series_key TEXT PRIMARY KEY REFERENCES series(key) ON DELETE CASCADE,
    label TEXT NOT NULL REFERENCES classes(name) ON DELETE CASCADE ON UPDATE CASCADE,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS slice_labels (
    series_key TEXT NOT NULL REFERENCES series(key) ON DELETE CASCADE,
    slice_index INTEGER NOT NULL,
    label TEXT NOT NULL REFERENCES classes(name) ON DELETE CASCADE ON UPDATE CASCADE,
    updated TEXT NOT NULL,
    PRIMARY KEY (series_key, slice_index)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    metrics_json TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value_json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS import_errors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    reason TEXT NOT NULL,
    seen TEXT NOT NULL,
    UNIQUE (path, reason)
);
"""

# Upgrades from the previous schema version, applied in order when an older
# workspace is opened. The DDL is in SCHEMA too (a fresh workspace gets it at
# once); repeating it here keeps each step self-contained.
MIGRATIONS: dict[int, str] = {
    2: "CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value_json TEXT NOT NULL)",
}
