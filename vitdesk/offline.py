"""Keep vitdesk offline: the switches every hub library reads, set before any of them loads.

Hospital workstations are often air-gapped, and a product that says "offline" must
never reach out (not even to retry for a minute before failing). huggingface_hub
reads ``HF_HUB_OFFLINE`` once, when it is imported, into
``huggingface_hub.constants``; setting the variable later has no effect. So
:func:`go_offline` runs first in every entry point (``vitdesk.cli.main``, the GUI
start) and, where a hub library is already imported, also flips its constants.
Light on purpose: imports nothing beyond the standard library.
"""

from __future__ import annotations

import os
import sys

OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",  # huggingface_hub (timm's hub weights): cache only
    "TRANSFORMERS_OFFLINE": "1",  # transformers, and older huggingface_hub versions
    "HF_DATASETS_OFFLINE": "1",  # datasets
    "HF_HUB_DISABLE_TELEMETRY": "1",  # no usage pings
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",  # never send a stored token anywhere
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "DO_NOT_TRACK": "1",  # the cross-tool opt-out huggingface_hub also honours
}


def go_offline(environ: dict[str, str] | None = None) -> None:
    """Set the offline switches (idempotent; call before anything imports a hub library).

    Args:
        environ: the environment to change (``os.environ`` when None; tests pass a dict).
    """
    env = os.environ if environ is None else environ
    env.update(OFFLINE_ENV)
    if environ is None:
        _patch_imported()


def _patch_imported() -> None:
    # Already imported (a plugin, an embedding application, a test): its constants were
    # read from the environment before we set it, so set them too.
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        for name in ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY",
                     "HF_HUB_DISABLE_IMPLICIT_TOKEN"):
            if hasattr(constants, name):
                setattr(constants, name, True)
    tf_utils = sys.modules.get("transformers.utils.hub")
    if tf_utils is not None and hasattr(tf_utils, "_is_offline_mode"):
        tf_utils._is_offline_mode = True  # noqa: SLF001 - transformers caches it here


def is_offline() -> bool:
    """True when huggingface_hub (if imported) and the environment are both offline."""
    constants = sys.modules.get("huggingface_hub.constants")
    hub_ok = constants is None or bool(getattr(constants, "HF_HUB_OFFLINE", True))
    return hub_ok and os.environ.get("HF_HUB_OFFLINE") == "1"
