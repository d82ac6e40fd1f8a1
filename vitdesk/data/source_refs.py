"""Data sources named in run folders by a keyed fingerprint, never by their path.

A data folder's path often holds a patient's name (real exports are named
``DOE^JOHN_12345678/``), so run folders (``config.toml``, ``split.json``) record a
source as ``ref:<safe_key of the resolved path>``. The path behind a ref is kept in
the user's own configuration folder (``sources.json`` beside the installation
secret, see :func:`vitdesk.imaging.deid.config_dir`), so on this installation a run
still finds its data; elsewhere the user gives the path again (``--data``), and it
is checked against the ref.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vitdesk.errors import DataError
from vitdesk.imaging.deid import config_dir, safe_key

REF_PREFIX = "ref:"
REGISTRY_NAME = "sources.json"


def is_ref(text: object) -> bool:
    """True for a recorded fingerprint (``ref:...``) rather than a path."""
    return isinstance(text, str) and text.startswith(REF_PREFIX)


def _absolute(path: str | Path) -> str:
    p = Path(path).expanduser()
    try:
        return str(p.resolve())
    except OSError:  # unreadable component: the lexical form is still one name for it
        return os.path.abspath(p)


def source_ref(path: str | Path) -> str:
    """The fingerprint of a data path: keyed, so it cannot be guessed back from names."""
    if is_ref(str(path)):
        return str(path)
    return REF_PREFIX + safe_key("data source:" + _absolute(path))


def _registry() -> Path:
    return config_dir() / REGISTRY_NAME


def _read_registry() -> dict[str, str]:
    try:
        doc = json.loads(_registry().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}


def remember(path: str | Path) -> str:
    """Record ``path`` under its ref in the user's registry; return the ref.

    The registry is a convenience (a run finds its data again on this installation):
    when it cannot be written the ref is still returned.
    """
    if is_ref(str(path)):
        return str(path)
    ref = source_ref(path)
    known = _read_registry()
    if known.get(ref) == _absolute(path):
        return ref
    known[ref] = _absolute(path)
    reg = _registry()
    try:
        reg.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = reg.with_name(f"{reg.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(known, fh, indent=1, sort_keys=True)
        os.replace(tmp, reg)
    except OSError:
        pass
    return ref


def lookup(ref: str) -> str | None:
    """The path recorded for ``ref`` on this installation (it may since have moved)."""
    path = _read_registry().get(ref)
    if path and source_ref(path) == ref:
        return path
    return None


def resolve_source(text: str, what: str = "data source") -> str:
    """A usable path for ``text``: itself, or the local path behind a ``ref:``."""
    if not is_ref(text):
        return text
    path = lookup(text)
    if path is None:
        raise DataError(
            f"the {what} of this run is recorded only as a fingerprint ({text}) and is not "
            "known on this machine: give its path again (e.g. --data SRC or --val SRC)"
        )
    return path


def same_source(a: str | Path | None, b: str | Path | None) -> bool:
    """True when ``a`` and ``b`` name the same data (paths or refs, in any mix)."""
    if not a or not b or not str(a).strip() or not str(b).strip():
        return False
    return source_ref(a) == source_ref(b)


# Run-config fields that hold data paths (dotted); teacher.run names a run folder
# chosen by the user, not patient data, and stays a path.
DATA_PATH_FIELDS = ("data.source", "data.val_source", "teacher.unlabelled", "adapt.source")


def _get(obj: object, dotted: str) -> object:
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
    return obj


def _set(obj: object, dotted: str, value: str) -> None:
    *parents, name = dotted.split(".")
    for part in parents:
        obj = getattr(obj, part)
    setattr(obj, name, value)


def for_run_folder(cfg: object) -> object:
    """A copy of a run config whose data paths are refs (remembered locally)."""
    import copy

    out = copy.deepcopy(cfg)
    for dotted in DATA_PATH_FIELDS:
        value = _get(out, dotted)
        if isinstance(value, str) and value.strip():
            _set(out, dotted, remember(value))
    return out


def from_run_folder(cfg: object) -> object:
    """Turn refs of a loaded run config back into paths where this installation knows them.

    Unknown refs stay as they are (the caller asks the user for the path).
    """
    for dotted in DATA_PATH_FIELDS:
        value = _get(cfg, dotted)
        if is_ref(value):
            _set(cfg, dotted, lookup(str(value)) or str(value))
    return cfg


def find_root(ref: str, data_src: str | Path | None = None, depth: int = 3) -> str | None:
    """The folder whose fingerprint is ``ref``: from the registry, else near ``data_src``.

    Near means ``data_src`` (its folder for a file), its parents, and its subfolders up
    to ``depth`` levels: a split's root is the common folder of its files, which may lie
    above the source (a separate ``--val``) or below it.
    """
    known = lookup(ref)
    if known is not None:
        return known
    if data_src is None or not str(data_src).strip():
        return None
    start = Path(_absolute(data_src))
    if start.is_file():
        start = start.parent
    for cand in (start, *start.parents):
        if source_ref(cand) == ref:
            return str(cand)
    frontier = [start]
    for _ in range(depth):
        nxt = []
        for d in frontier:
            try:
                subs = sorted(e for e in d.iterdir() if e.is_dir())
            except OSError:
                continue
            for s in subs:
                if source_ref(s) == ref:
                    return str(s)
            nxt.extend(subs)
        frontier = nxt[:2000]  # bounded: a huge tree is not searched exhaustively
    return None
