"""Engine tests: one intra-op thread.

The test machines are small and shared; two OpenMP threads fighting other processes
for two cores run these tiny models ~10x slower than one thread.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
