"""Suite-wide settings: offscreen Qt, quiet and small torch."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Hospital machines are offline; so are the tests: nothing may reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TIMM_OFFLINE", "1")
# Keyed patient hashes use a per-installation secret: tests get their own, in a
# session temp folder (inherited by CLI subprocesses), never the user's real one.
_SECRET_DIR = tempfile.mkdtemp(prefix="vitdesk-secret-")
os.environ["VITDESK_SECRET_FILE"] = os.path.join(_SECRET_DIR, "secret.key")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op torch thread per test: on a small shared machine two threads
    fighting over two cores made training ~10x slower; restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
