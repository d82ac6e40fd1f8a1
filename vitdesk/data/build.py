"""From dataset sources to train/val/test :class:`SliceDataset` objects."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Sampler

from vitdesk.data.augment import AugmentConfig
from vitdesk.data.dataset import SliceDataset
from vitdesk.data.records import SliceRecord, classes_of, label_counts
from vitdesk.data.sources import load_records
from vitdesk.data.splits import check_no_leak, fold_split, parse_fold, split_by_patient
from vitdesk.errors import DataError
from vitdesk.imaging.windowing import WindowSpec
from vitdesk.jobs import NEVER, CancelToken, Listener, Notice, emit


@dataclass
class DataBundle:
    """Datasets of one run plus what the run folder records about them."""

    train: SliceDataset
    val: SliceDataset | None
    test: SliceDataset | None
    classes: list[str]
    splits: dict[str, list[SliceRecord]] = field(default_factory=dict)
    fingerprint: str = ""

    def summary(self) -> str:
        """One line per split: slices, patients, slices per class (safe to print)."""
        lines = []
        for name, recs in self.splits.items():
            counts = label_counts(recs)
            per = ", ".join(f"{k} {v}" for k, v in counts.items())
            lines.append(f"{name}: {len(recs)} slices, {len({r.patient for r in recs})} "
                         f"patients ({per or 'none'})")
        return "\n".join(lines)


def fingerprint(records: Sequence[SliceRecord], length: int = 16) -> str:
    """Short sha256 of the sorted (relative path, frame, label, file size) list.

    Paths are taken relative to the records' common folder, so the same data in
    another place gives the same fingerprint; a changed, added or relabelled file
    changes it.
    """
    paths = [os.path.abspath(r.path) for r in records]
    try:
        root = os.path.commonpath(paths) if paths else ""
    except ValueError:
        root = ""
    if root in set(paths):
        root = os.path.dirname(root)
    sizes: dict[str, int] = {}
    rows = []
    for r, p in zip(records, paths, strict=True):
        if p not in sizes:
            try:
                sizes[p] = os.path.getsize(p)
            except OSError:
                sizes[p] = -1
        rel = os.path.relpath(p, root).replace(os.sep, "/") if root else p
        rows.append(f"{rel}\t{r.frame}\t{r.label}\t{sizes[p]}")
    h = hashlib.sha256("\n".join(sorted(rows)).encode("utf-8"))
    return h.hexdigest()[:length]


def build_datasets(
    data_src,
    val_src=None,
    *,
    window: WindowSpec,
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    channels: int = 3,
    seed: int = 0,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    augment: AugmentConfig | None = None,
    classes: list[str] | None = None,
    cancel: CancelToken = NEVER,
    listener: Listener | None = None,
    cache_mb: float = 512.0,
    patient_id: str = "check",
    fold: str | None = None,
) -> DataBundle:
    """Load ``data_src``, split it by patient and wrap each split in a SliceDataset.

    Without ``val_src`` the data is split train/val/test by ``fractions``. With
    ``val_src`` all of ``data_src`` is for training, ``val_src`` is the validation
    set and there is no test set (evaluate on a separate source). Only train is
    augmented. Raises DataError on a patient in two splits, or labels outside
    ``classes``. ``patient_id``: trust mode for a CSV patient_id column (see
    :func:`vitdesk.data.sources.read_manifest`). ``fold``: ``"i/k"`` for fold i of a
    k-fold cross-validation (:func:`vitdesk.data.splits.fold_split`): test is fold i's
    patients and validation is carved from the rest by ``fractions``' train:val ratio.
    """
    if fold and val_src is not None:
        raise DataError(f"data.fold='{fold}' carves validation from each fold's training "
                        "patients: leave out the separate validation source (--val)")
    fold_ik = parse_fold(fold) if fold else None  # a bad value is named before any scan
    records = load_records(data_src, cancel, listener, patient_id=patient_id)
    if val_src is not None:
        val_records = load_records(val_src, cancel, listener, min_classes=1,
                                   patient_id=patient_id)
        splits = {"train": records, "val": val_records, "test": []}
    elif fold_ik is not None:
        splits = fold_split(records, fold_ik[0], fold_ik[1], seed=seed, fractions=fractions)
    else:
        splits = split_by_patient(records, fractions=fractions, seed=seed, stratify=True)
    check_no_leak(splits)

    found = classes_of(records)
    if classes is None:
        classes = found
    else:
        classes = list(classes)
        extra = sorted(set(classes_of(r for s in splits.values() for r in s)) - set(classes))
        if extra:
            raise DataError(
                f"{data_src}: label(s) {', '.join(extra)} are not in the configured classes "
                f"({', '.join(classes)}): add them to the config or relabel"
            )
    missing_train = sorted(set(found) - set(classes_of(splits["train"])))
    if missing_train:
        emit(listener, Notice("load dataset",
                              f"class(es) {', '.join(missing_train)} have no training patient"))
    if not splits["val"]:
        emit(listener, Notice("load dataset", "no validation patients: too few patients"))

    def make(recs: list[SliceRecord], aug: AugmentConfig | None) -> SliceDataset | None:
        if not recs:
            return None
        return SliceDataset(recs, classes, window, img_size, mean, std, channels=channels,
                            augment=aug, cache_mb=cache_mb)

    train = make(splits["train"], augment)
    if train is None:
        raise DataError(f"{data_src}: no training slices after the split: add patients")
    return DataBundle(
        train=train,
        val=make(splits["val"], None),
        test=make(splits["test"], None),
        classes=classes,
        splits=splits,
        fingerprint=fingerprint([r for s in splits.values() for r in s]),
    )


class EpochSampler(Sampler):
    """Wraps a sampler and yields ``(index, epoch)`` so workers know the epoch.

    Persistent DataLoader workers keep their own dataset copy, so
    ``dataset.set_epoch`` in the main process does not reach them; the epoch has to
    travel with the index. Call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, base: Sampler | Sequence[int]) -> None:
        self.base = base
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.base, "set_epoch"):  # DistributedSampler reshuffles per epoch
            self.base.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.base:
            yield (int(i), self.epoch)

    def __len__(self) -> int:
        return len(self.base)


def make_loader(
    dataset: SliceDataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    num_workers: int = 0,
    seed: int = 0,
    sampler: Sampler | None = None,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> tuple[DataLoader, EpochSampler]:
    """A DataLoader whose workers persist (keeping their caches) and see the epoch.

    Returns the loader and its :class:`EpochSampler`; call ``set_epoch`` on the
    sampler at the start of every epoch (it also reseeds the shuffle).
    """
    if sampler is None:
        if shuffle:
            sampler = _SeededRandomSampler(len(dataset), int(seed))
        else:
            sampler = range(len(dataset))  # type: ignore[assignment]
    es = EpochSampler(sampler)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=es,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        drop_last=drop_last,
        pin_memory=pin_memory,
    )
    return loader, es


class _SeededRandomSampler(Sampler):
    """A permutation that depends only on (seed, epoch): reproducible and resumable."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n
