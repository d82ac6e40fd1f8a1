"""Patient-level train/val/test splits: stratified, deterministic, leak-checked.

No patient ever appears in two splits (DESIGN.md). Stratification uses each
patient's majority label. Torch-free.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from vitdesk.data.records import SliceRecord, safe_key
from vitdesk.errors import DataError

SPLIT_NAMES = ("train", "val", "test")
# 3: files are keyed hashes of their path below the root (subfolders of real exports
#    are often named for the patient); 2: relative paths; 1: the absolute root
SPLIT_VERSION = 3


def _counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Patients per split: largest remainder, every non-zero split gets one if possible."""
    raw = [n * f for f in fractions]
    counts = [int(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: (raw[i] - counts[i], -i), reverse=True)
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    # Small datasets: give each requested split one patient, taken from the largest.
    for i, f in enumerate(fractions):
        if f > 0 and counts[i] == 0:
            donor = max(range(len(counts)), key=lambda j: counts[j])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[i] += 1
    return counts


def _majority_label(labels: list[str | None]) -> str:
    c = Counter(label for label in labels if label is not None)
    if not c:
        return ""
    top = max(c.values())
    return min(k for k, v in c.items() if v == top)  # ties broken alphabetically


def patient_strata(records: Sequence[SliceRecord]) -> dict[str, str]:
    """The class each patient is stratified by.

    A patient with one label (series-level labels) is stratified by it, i.e. by its
    majority label. A patient with several labels (slice-level labels: mostly
    "normal" slices plus a few "lesion" ones) is stratified by its globally rarest
    label, because by majority every such patient would be "normal" and the
    minority class would not be spread over the splits at all.
    """
    overall = Counter(r.label for r in records if r.label is not None)
    labels: dict[str, list[str | None]] = defaultdict(list)
    for r in records:
        labels[r.patient].append(r.label)
    strata = {}
    for p, ls in labels.items():
        present = {label for label in ls if label is not None}
        if len(present) <= 1:
            strata[p] = _majority_label(ls)
        else:
            strata[p] = min(present, key=lambda k: (overall[k], k))
    return strata


def split_by_patient(
    records: Sequence[SliceRecord],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    stratify: bool = True,
) -> dict[str, list[SliceRecord]]:
    """Split records into train/val/test so that each patient is in exactly one split.

    With ``stratify`` the patients of each class (see :func:`patient_strata`: the
    majority label, or the rarest label of a mixed patient) are spread over the
    splits in proportion, and every class gets at least one train patient when it
    has one at all. The result depends only on the records and ``seed``.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise DataError(
            f"split fractions {tuple(fractions)} are invalid: give three non-negative "
            "numbers for train, val, test (e.g. 0.7,0.15,0.15)"
        )
    if fractions[0] <= 0:
        raise DataError("the train fraction must be positive")
    total = float(sum(fractions))
    fr = [f / total for f in fractions]

    by_patient: dict[str, list[SliceRecord]] = defaultdict(list)
    for r in records:
        by_patient[r.patient].append(r)
    patients = sorted(by_patient)  # sorted first so the seed alone decides the order
    rng = random.Random(seed)
    majority = patient_strata(records)

    if stratify:
        # Shuffle within each class, then interleave classes by relative rank so any
        # contiguous run of the order holds every class in proportion.
        by_class: dict[str, list[str]] = defaultdict(list)
        for p in patients:
            by_class[majority[p]].append(p)
        keyed = []
        for cls in sorted(by_class):
            members = by_class[cls]
            rng.shuffle(members)
            n = len(members)
            keyed.extend(((i + rng.random()) / n, cls, p) for i, p in enumerate(members))
        order = [p for _, _, p in sorted(keyed)]
    else:
        order = list(patients)
        rng.shuffle(order)

    counts = _counts(len(order), fr)
    assigned: dict[str, list[str]] = {}
    start = 0
    for name, n in zip(SPLIT_NAMES, counts, strict=True):
        assigned[name] = order[start : start + n]
        start += n

    if stratify:
        _ensure_train_has_every_class(assigned, majority)

    return {
        name: [r for p in assigned[name] for r in by_patient[p]] for name in SPLIT_NAMES
    }


def parse_fold(text: str) -> tuple[int, int]:
    """``"i/k"`` (fold i of k, 1-based) as ``(i, k)``; DataError naming the fix."""
    try:
        i_text, k_text = str(text).split("/")
        i, k = int(i_text), int(k_text)
    except ValueError:
        raise DataError(f"data.fold='{text}' is not i/k (e.g. 2/5: fold 2 of 5)") from None
    if k < 2 or not 1 <= i <= k:
        raise DataError(f"data.fold='{text}': use i/k with k >= 2 and 1 <= i <= k (e.g. 2/5)")
    return i, k


def kfold_patients(
    records: Sequence[SliceRecord], k: int, seed: int = 0, stratify: bool = True
) -> list[list[str]]:
    """The patients of each of ``k`` folds: every patient in exactly one fold.

    With ``stratify`` the patients of each class (:func:`patient_strata`) are shuffled
    and dealt round-robin, one class after another, continuing where the last class
    stopped: each class's count per fold then differs by at most one, and so do the
    fold sizes. The result depends only on the records, ``k`` and ``seed``. Raises
    DataError when there are fewer patients than folds.
    """
    patients = sorted({r.patient for r in records})  # sorted: the seed alone decides
    if k < 2:
        raise DataError(f"--folds {k}: use 2 or more folds (5 is usual)")
    if len(patients) < k:
        raise DataError(f"--folds {k} needs at least {k} patients and the data has "
                        f"{len(patients)}: use fewer folds or add patients")
    rng = random.Random(seed)
    if stratify:
        strata = patient_strata(records)
        order: list[str] = []
        for cls in sorted({strata[p] for p in patients}):
            members = [p for p in patients if strata[p] == cls]
            rng.shuffle(members)
            order.extend(members)
    else:
        order = list(patients)
        rng.shuffle(order)
    folds: list[list[str]] = [[] for _ in range(k)]
    for pos, p in enumerate(order):
        folds[pos % k].append(p)
    return [sorted(f) for f in folds]


def fold_split(
    records: Sequence[SliceRecord], fold: int, k: int, seed: int = 0,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
) -> dict[str, list[SliceRecord]]:
    """Train/val/test of fold ``fold`` (1-based) of ``k``: test is that fold's patients,
    validation is carved by patient from the other folds in the train:val ratio of
    ``fractions`` (its test share is unused), stratified as :func:`split_by_patient`."""
    if not 1 <= fold <= k:
        raise DataError(f"fold {fold} of {k} does not exist: use 1 to {k}")
    test_patients = set(kfold_patients(records, k, seed)[fold - 1])
    rest = [r for r in records if r.patient not in test_patients]
    f_train, f_val = float(fractions[0]), float(fractions[1])
    inner = split_by_patient(rest, fractions=(f_train, f_val, 0.0), seed=seed, stratify=True)
    return {"train": inner["train"], "val": inner["val"],
            "test": [r for r in records if r.patient in test_patients]}


def _ensure_train_has_every_class(
    assigned: dict[str, list[str]], majority: dict[str, str]
) -> None:
    """Swap patients so every class with a patient has one in train."""
    for cls in sorted(set(majority.values())):
        if any(majority[p] == cls for p in assigned["train"]):
            continue
        train_classes = Counter(majority[p] for p in assigned["train"])
        for other in ("val", "test"):
            cand = [p for p in assigned[other] if majority[p] == cls]
            if not cand:
                continue
            # Give back a train patient of the most represented class (if it has spare).
            spare = [p for p in assigned["train"] if train_classes[majority[p]] > 1]
            if spare:
                donor = max(spare, key=lambda p: (train_classes[majority[p]], p))
                assigned["train"].remove(donor)
                assigned[other].append(donor)
            assigned[other].remove(cand[0])
            assigned["train"].append(cand[0])
            break


def check_no_leak(splits: dict[str, Sequence[SliceRecord]]) -> None:
    """Raise DataError if a patient or a slice appears in more than one split."""
    seen_patient: dict[str, str] = {}
    seen_slice: dict[tuple[str, int], str] = {}
    for name, recs in splits.items():
        for r in recs:
            prev = seen_patient.get(r.patient)
            if prev is not None and prev != name:
                raise DataError(
                    f"patient {r.patient} is in both the {prev} and {name} splits "
                    f"({r.path}): split by patient, or remove the patient from one source"
                )
            seen_patient[r.patient] = name
            key = (r.path, r.frame)
            prev = seen_slice.get(key)
            if prev is not None and prev != name:
                raise DataError(
                    f"{r.path} (frame {r.frame}) is in both the {prev} and {name} splits: "
                    "remove the duplicate"
                )
            seen_slice[key] = name


def _common_root(paths: list[str]) -> str:
    if not paths:
        return ""
    try:
        root = os.path.commonpath(paths)
    except ValueError:  # different drives (Windows): keep absolute paths
        return ""
    # A single distinct file is its own common path: use its folder.
    return os.path.dirname(root) if root in set(paths) else root


def save_split(splits: dict[str, Sequence[SliceRecord]], path: str | Path) -> Path:
    """Write the split as JSON: each file as a keyed hash of its path below the data root.

    Only safe fields are stored (keyed patient/series keys, label, sex, age). The root
    itself is stored as a keyed fingerprint (its path may name a patient), remembered
    on this installation; :func:`load_split` finds it again or is given the data.
    """
    from vitdesk.data.source_refs import remember

    path = Path(path)
    all_paths = [r.path for recs in splits.values() for r in recs]
    root = _common_root([os.path.abspath(p) for p in all_paths])
    out: dict = {"version": SPLIT_VERSION, "root_ref": remember(root) if root else "",
                 "splits": {}}
    folders: set[str] = set()
    for name, recs in splits.items():
        rows = []
        for r in recs:
            d = r.to_dict()
            if root:
                rel = Path(os.path.relpath(os.path.abspath(r.path), root))
                del d["path"]
                d["file"] = file_key(rel)
                folders.update(file_key(p) for p in rel.parents if str(p) != ".")
            rows.append(d)
        out["splits"][name] = rows
    # keyed folder names let load_split walk only the folders that hold the split's files
    out["folders"] = sorted(folders)
    path.parent.mkdir(parents=True, exist_ok=True)
    from vitdesk.fileio import atomic_write_text

    # atomic: a crash or a full disk never leaves half a split file (nor a temp file)
    atomic_write_text(path, json.dumps(out, indent=1))
    return path


def split_root(
    path: str | Path, data_src: str | Path | None = None
) -> str:
    """The absolute data root of a split file ("" when its paths are absolute).

    Found from the installation's registry, else next to ``data_src`` (the source the
    user gives, checked against the recorded fingerprint). Raises DataError when
    neither knows it.
    """

    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: split file not found") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a vitdesk split file ({exc}): re-create the run") from None
    return _root_of(doc, path, data_src)


def _root_of(doc: dict, path: Path, data_src: str | Path | None) -> str:
    if doc.get("root"):  # version 1 wrote the absolute root
        return str(doc["root"])
    ref = str(doc.get("root_ref") or "")
    if not ref:
        return ""
    from vitdesk.data.source_refs import find_root

    root = find_root(ref, data_src)
    if root is None:
        raise DataError(
            f"{path}: the run's data folder is recorded only as a fingerprint and is not "
            "known on this machine: give the run's data source (--data SRC)"
        )
    return root


def file_key(relpath: str | Path) -> str:
    """Keyed, non-reversible name of a file by its path below the data root."""
    return "f" + safe_key("split file:" + Path(relpath).as_posix())


def _files_by_key(root: str, wanted: set[str], folders: set[str]) -> dict[str, str]:
    """Map the wanted file keys to absolute paths, walking only the split's folders."""
    found: dict[str, str] = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs
                   if file_key(os.path.relpath(os.path.join(folder, d), root)) in folders]
        for name in names:
            full = os.path.join(folder, name)
            k = file_key(os.path.relpath(full, root))
            if k in wanted:
                found[k] = full
                if len(found) == len(wanted):
                    return found
    return found


def load_split(
    path: str | Path, data_root: str | Path | None = None,
    data_src: str | Path | None = None,
) -> dict[str, list[SliceRecord]]:
    """Read a split JSON.

    ``data_root`` rebases the paths when the data has moved; otherwise the root is
    found as :func:`split_root` says (``data_src``: the source the user named).
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        rows_all = [d for rows in doc["splits"].values() for d in rows]
        needs_root = any("file" in d or not os.path.isabs(str(d.get("path", "")))
                         for d in rows_all)
        if data_root is not None:
            root = str(data_root)
        else:
            root = _root_of(doc, path, data_src) if needs_root else ""
        wanted = {str(d["file"]) for d in rows_all if "file" in d}
        by_key = (_files_by_key(root, wanted, set(doc.get("folders", [])))
                  if wanted and root else {})
        missing = len(wanted - set(by_key))
        if missing:
            raise DataError(
                f"{path}: {missing} of the split's {len(wanted)} files are not under the "
                "run's data folder any more: give the data the run was trained on (--data SRC)"
            )
        splits = {}
        for name, rows in doc["splits"].items():
            recs = []
            for d in rows:
                if "file" in d:
                    d = {**d, "path": by_key[str(d["file"])]}
                rec = SliceRecord.from_dict(d)
                if root and not os.path.isabs(rec.path):  # version 2: relative paths
                    rec = SliceRecord.from_dict({**d, "path": os.path.join(root, rec.path)})
                recs.append(rec)
            splits[name] = recs
    except FileNotFoundError:
        raise DataError(f"{path}: split file not found") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{path}: not a vitdesk split file ({exc}): re-create the run") from None
    return splits
