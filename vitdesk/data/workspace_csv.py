"""Label CSV import and manifest export for a :class:`~vitdesk.data.workspace.Workspace`.

Kept apart from the index itself: this is the CSV format (``path,label[,patient_id,
sex,age]``) and how its rows map onto imported slices and series. Use the
``Workspace.import_labels_csv`` / ``Workspace.export_manifest`` methods; these
functions are their bodies and use the workspace's private transaction and
path helpers, so they belong to the same package.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

from vitdesk.data.label_checks import check_classes, check_new_class
from vitdesk.data.workspace import LabelImport, Workspace, _now
from vitdesk.errors import DataError


def import_labels_csv(ws: Workspace, path: str | Path) -> LabelImport:
    """Apply a labels/manifest CSV (``path,label[,patient_id,sex,age]``).

    A row naming an imported slice file labels that slice; a row naming a folder
    labels every series whose files lie in it. Unknown classes are added. Rows
    naming nothing in the workspace are reported in ``unmatched``.
    """
    csv_path = Path(path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [(h or "").strip().lower() for h in reader.fieldnames or []]
            rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in r.items()}
                    for r in reader]
    except OSError as exc:
        raise DataError(f"{csv_path}: cannot read the CSV ({exc.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: not a readable CSV ({exc}): save it as UTF-8") from None
    if "path" not in fields or "label" not in fields:
        raise DataError(f"{csv_path}: the header must be path,label[,patient_id,sex,age] "
                        f"(found: {', '.join(fields) or 'none'})")
    # a typo ("lesoin", "Lesion") must not silently become a class of its own
    counts = Counter(row["label"] for row in rows if row.get("path") and row.get("label"))
    check_classes(dict(counts), str(csv_path), min_examples=0, unit="rows")
    existing = ws.classes()
    for label in sorted(counts):
        try:
            check_new_class(label, existing)
        except DataError as exc:
            raise DataError(f"{csv_path}: {exc} ({counts[label]} row(s))") from None
    base = csv_path.parent
    n_series = n_slices = 0
    unmatched: list[str] = []
    now = _now()
    with ws._tx() as c:
        for row in rows:
            rel, label = row.get("path", ""), row.get("label", "")
            if not rel or not label:
                continue
            target = Path(rel) if os.path.isabs(rel) else base / rel
            c.execute("INSERT OR IGNORE INTO classes (name, position) VALUES "
                      "(?, (SELECT COALESCE(MAX(position), -1) + 1 FROM classes))", (label,))
            if target.is_dir():
                prefix = ws._store_path(target).rstrip("/") + "/"
                keys = [r[0] for r in c.execute(
                    "SELECT DISTINCT series_key FROM series_files WHERE substr(path, 1, ?) "
                    "= ?", (len(prefix), prefix))]
                for key in keys:
                    c.execute(
                        "INSERT INTO series_labels (series_key, label, updated) "
                        "VALUES (?, ?, ?) ON CONFLICT(series_key) DO UPDATE SET "
                        "label = excluded.label, updated = excluded.updated",
                        (key, label, now))
                n_series += len(keys)
                if not keys:
                    unmatched.append(rel)
                continue
            hits = c.execute("SELECT series_key, idx FROM series_files WHERE path = ?",
                             (ws._store_path(target),)).fetchall()
            if not hits:
                unmatched.append(rel)
            for h in hits:
                c.execute(
                    "INSERT INTO slice_labels (series_key, slice_index, label, updated) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT(series_key, slice_index) DO UPDATE SET "
                    "label = excluded.label, updated = excluded.updated",
                    (h["series_key"], h["idx"], label, now))
            n_slices += len(hits)
    return LabelImport(n_series, n_slices, tuple(unmatched))


def export_manifest(ws: Workspace, path: str | Path) -> int:
    """Write a manifest CSV (``path,label,sex,age``) of every labelled slice file.

    Paths are relative to the CSV's folder when possible. Multi-frame files are
    written only when all their frames share one label (the format labels files).
    Returns the number of rows.
    """
    out = Path(path)
    base = Path(os.path.abspath(out.parent))
    rows: list[tuple[str, str, str, str]] = []
    patients = {p.key: p for p in ws.patients()}
    for s in ws.series():
        labels = ws.labels_for_series(s.key)
        if not labels or not s.files:
            continue
        p = patients.get(s.patient_key)
        sex = (p.sex or "") if p else ""
        age = f"{p.age:g}" if p and p.age is not None else ""
        per_file = max(1, s.n_slices // len(s.files))
        if per_file * len(s.files) != s.n_slices:
            per_file = 0  # irregular multi-frame layout: fall back to series labels
        for i, f in enumerate(s.files):
            if per_file == 1:
                label = labels.get(i)
            else:
                frames = range(i * per_file, (i + 1) * per_file) if per_file else []
                found = {labels.get(j) for j in frames} or {s.label}
                label = found.pop() if len(found) == 1 else None
            if label is None:
                continue
            try:
                rel = os.path.relpath(f, base)
            except ValueError:  # another drive on Windows
                rel = f
            rows.append((Path(rel).as_posix(), label, sex, age))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["path", "label", "sex", "age"])
        w.writerows(rows)
    os.replace(tmp, out)
    return len(rows)


__all__ = ["export_manifest", "import_labels_csv"]
