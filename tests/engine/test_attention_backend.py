"""The auto attention backend: sdpa unless eager is clearly faster."""

from __future__ import annotations


def test_auto_attention_keeps_sdpa_unless_eager_is_clearly_faster():
    from vitdesk.engine.models import pick_backend

    assert pick_backend(27.9, 26.3) == "sdpa"  # 6 % apart: load noise, not a real gain
    assert pick_backend(30.0, 20.0) == "eager"
    assert pick_backend(20.0, 30.0) == "sdpa"
    assert pick_backend(10.0, 9.05) == "sdpa" and pick_backend(10.0, 8.95) == "eager"
