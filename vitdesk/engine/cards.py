"""The backbone card (``card.json``) that a pretraining folder carries: one home for its
format and its reader. No torch: the GUI lists backbones and the plan reads their
window and size without loading a model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vitdesk.errors import CheckpointError

CARD = "card.json"
CARD_FORMAT = "vitdesk-mae-card-1"


def read_card(folder: str | Path) -> dict[str, Any] | None:
    """The ``card.json`` of a pretraining folder (or of the folder holding a weights file),
    or None when there is none. Fine-tuning uses it to warn about a window or size mismatch."""
    p = Path(folder)
    if p.is_file():
        p = p.parent
    card = p / CARD
    if not card.is_file():
        return None
    try:
        data = json.loads(card.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise CheckpointError(f"{card} is corrupt ({exc}): re-run vitdesk pretrain") from None
    return data if isinstance(data, dict) and data.get("format") == CARD_FORMAT else None
