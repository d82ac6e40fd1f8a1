"""Label and patient-ID checks shared by every way labels come in.

Two silent wrong answers are refused here, once, for manifests, ``labels.csv``,
class folders and workspaces (:func:`vitdesk.data.sources.load_records` and the
workspace CSV import call these):

* a CSV ``patient_id`` that contradicts the files' DICOM PatientID: the same
  DICOM patient under two CSV IDs would be split as two patients and leak across
  train/val/test while the leak check passes; one CSV ID over several DICOM
  patients means the column is not what it claims. The user may say which to
  trust (``patient_id = "csv"`` or ``"dicom"``; default ``"check"``).
* a class too small to learn and evaluate (fewer than :data:`MIN_EXAMPLES`
  examples), or a near-spelling of another class ("lesoin" next to "lesion",
  "Lesion " next to "lesion"): a typo would silently become a class of its own.

Raw DICOM PatientIDs never reach a message: files and CSV rows are named instead
(the CSV's own IDs are the user's to see).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vitdesk.errors import DataError

MIN_EXAMPLES = 5
PATIENT_ID_MODES = ("check", "csv", "dicom")


# ---------------------------------------------------------------- patient IDs


@dataclass(frozen=True)
class PatientLink:
    """One CSV row's patient ID next to the (keyed) DICOM PatientID of one of its files."""

    row: int  # 1-based line number in the CSV (header = 1)
    csv_id: str  # as the user wrote it
    dicom_key: str  # keyed hash of the file's PatientID ("" when the file has none)
    file: str  # the row's path as written in the CSV


def check_patient_mode(mode: str) -> str:
    """Validate a ``patient_id`` trust mode; return it."""
    if mode not in PATIENT_ID_MODES:
        raise DataError(f"patient_id='{mode}' is not valid: choose one of "
                        f"{', '.join(PATIENT_ID_MODES)}")
    return mode


def check_patient_ids(links: Iterable[PatientLink], where: str) -> None:
    """Raise DataError when CSV patient IDs and DICOM PatientIDs disagree.

    Disagreement: one DICOM patient under several CSV IDs, or one CSV ID over files of
    several DICOM patients. Files without a PatientID cannot contradict anything.
    """
    by_dicom: dict[str, dict[str, PatientLink]] = defaultdict(dict)
    by_csv: dict[str, dict[str, PatientLink]] = defaultdict(dict)
    for link in links:
        if not link.dicom_key or not link.csv_id:
            continue
        by_dicom[link.dicom_key].setdefault(link.csv_id, link)
        by_csv[link.csv_id].setdefault(link.dicom_key, link)
    fix = ("fix the patient_id column, or say which to trust: --patient-id dicom (the "
           "files' PatientID) or --patient-id csv (the column)")
    split_patients = [v for v in by_dicom.values() if len(v) > 1]
    if split_patients:
        a, b = sorted(split_patients[0].values(), key=lambda x: x.row)[:2]
        raise DataError(
            f"{where}: patient_id '{a.csv_id}' (row {a.row}, {a.file}) and '{b.csv_id}' "
            f"(row {b.row}, {b.file}) are the same DICOM patient (one PatientID in the "
            f"files; {len(split_patients)} such patient(s)): they would be split as two "
            f"patients and could leak across train/val/test; {fix}"
        )
    merged = [v for v in by_csv.values() if len(v) > 1]
    if merged:
        a, b = sorted(merged[0].values(), key=lambda x: x.row)[:2]
        raise DataError(
            f"{where}: patient_id '{a.csv_id}' is given to files of {len(merged[0])} "
            f"different DICOM patients (row {a.row}, {a.file} and row {b.row}, {b.file}; "
            f"{len(merged)} such ID(s)); {fix}"
        )


# ---------------------------------------------------------------- classes


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-.]+", " ", name.casefold()).strip()


def _osa_distance(a: str, b: str) -> int:
    """Edit distance counting an adjacent transposition as one edit ("lesoin"/"lesion")."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def _differ_only_in_a_short_token(a: str, b: str) -> bool:
    """"grade 1"/"grade 2", "type a"/"type b", "t1"/"t2": numbered classes, not typos."""
    if re.sub(r"\d+", "#", a) == re.sub(r"\d+", "#", b):
        return True
    ta, tb = a.split(), b.split()
    if len(ta) != len(tb):
        return False
    diff = [(x, y) for x, y in zip(ta, tb, strict=True) if x != y]
    return len(diff) == 1 and max(len(diff[0][0]), len(diff[0][1])) <= 2


def is_near_spelling(a: str, b: str) -> bool:
    """True when class names ``a`` and ``b`` look like one name typed two ways.

    Case/whitespace/underscore variants always; otherwise one edit (a transposition
    counts as one) on names of at least 4 characters, except names that differ
    only in a number or a one/two-character token.
    """
    if a == b:
        return False
    na, nb = _norm(a), _norm(b)
    if na == nb:
        return True
    if min(len(na), len(nb)) < 4 or _differ_only_in_a_short_token(na, nb):
        return False
    return _osa_distance(na, nb) <= 1


def near_spellings(names: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs of distinct names that are near-spellings of each other (sorted)."""
    uniq = sorted(set(names))
    return [(a, b) for i, a in enumerate(uniq) for b in uniq[i + 1:] if is_near_spelling(a, b)]


def check_classes(
    counts: dict[str, int], where: str, min_examples: int = MIN_EXAMPLES, unit: str = "slices"
) -> list[str]:
    """Refuse near-spelled class names and (when ``min_examples``) classes too small.

    A class below ``min_examples`` next to a class that has enough is refused (a stray
    label or a mistake). When every class is below it the data is a toy set (a smoke
    test, a demo): nothing is silently wrong there, so it passes with a notice.
    Returns the notices to show.

    Args:
        counts: examples per class name.
        where: the source, named first in the message.
        min_examples: 0 skips the size rule (evaluation sets may be small).
        unit: what ``counts`` counts, for the message.
    """
    pairs = near_spellings(counts)
    if pairs:
        a, b = pairs[0]
        small, big = sorted((a, b), key=lambda k: (counts[k], k))
        more = f" (and {len(pairs) - 1} more such pair(s))" if len(pairs) > 1 else ""
        raise DataError(
            f"{where}: classes '{small}' ({counts[small]} {unit}) and '{big}' "
            f"({counts[big]} {unit}) look like one name spelled two ways{more}: fix the "
            f"label (e.g. '{small}' -> '{big}'), or rename one class if both are meant"
        )
    if min_examples:
        tiny = sorted((k for k, n in counts.items() if n < min_examples),
                      key=lambda k: (counts[k], k))
        if tiny and len(tiny) == len(counts):
            return [f"every class has fewer than {min_examples} {unit} (a toy data set): "
                    "results will mean little"]
        if tiny:
            shown = ", ".join(f"'{k}' ({counts[k]})" for k in tiny[:5])
            raise DataError(
                f"{where}: class(es) {shown} have fewer than {min_examples} {unit}: "
                f"too few to train and test on; label at least {min_examples} examples "
                "of each class, or remove those labels"
            )
    return []


def check_new_class(name: str, existing: Iterable[str]) -> None:
    """Refuse a new class name that is a near-spelling of an existing one."""
    if name in set(existing):
        return
    for other in existing:
        if is_near_spelling(name, other):
            raise DataError(f"class '{name}' looks like the existing class '{other}' spelled "
                            f"another way: use '{other}', or choose a clearly different name")


def check_record_labels(records: Sequence, where: str, training: bool) -> list[str]:
    """:func:`check_classes` on the labels of slice records (training: also the size rule)."""
    counts = dict(Counter(r.label for r in records if r.label is not None))
    return check_classes(counts, where, MIN_EXAMPLES if training else 0)
