"""Active learning suggestions: k-center greedy, uncertainty, what is left out, determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from tests.evalrun import tiny_run, tiny_sample
from vitdesk.analysis.suggest import (
    candidate_records,
    k_center_greedy,
    rank_candidates,
    suggest,
    uncertainty,
)
from vitdesk.errors import ConfigError


def _greedy_reference(x: np.ndarray, k: int, first: int) -> list[int]:
    """k-center greedy spelled out with loops (the definition)."""
    picked = [first]
    while len(picked) < k:
        best, best_d = None, -1.0
        for i in range(len(x)):
            if i in picked:
                continue
            d = min(float(np.sqrt(((x[i] - x[j]) ** 2).sum())) for j in picked)
            if d > best_d:
                best, best_d = i, d
        picked.append(best)
    return picked


def _radius(x: np.ndarray, centres: list[int]) -> float:
    d = np.linalg.norm(x[:, None, :] - x[centres][None, :, :], axis=-1)
    return float(d.min(axis=1).max())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_k_center_greedy_matches_the_reference_and_is_a_2_approximation(seed):
    x = np.random.default_rng(seed).normal(size=(10, 3))
    got = k_center_greedy(x, 3, first=seed % 10)
    assert got == _greedy_reference(x, 3, seed % 10)
    optimal = min(_radius(x, list(c)) for c in itertools.combinations(range(10), 3))
    assert _radius(x, got) <= 2 * optimal + 1e-9


def test_k_center_greedy_picks_one_point_per_far_apart_cluster():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    x = np.concatenate([c + 0.1 * rng.normal(size=(5, 2)) for c in centres])
    picked = k_center_greedy(x, 4, first=0)
    assert sorted(i // 5 for i in picked) == [0, 1, 2, 3]
    # with covered centres given, the first pick is the farthest from them
    far = k_center_greedy(x, 1, centres=centres[:3])
    assert far[0] // 5 == 3
    assert k_center_greedy(x, 0) == [] and len(k_center_greedy(x, 50)) == 20


def test_uncertainty_measures():
    p = np.array([[0.5, 0.5], [1.0, 0.0], [0.8, 0.2]])
    assert uncertainty(p, "entropy") == pytest.approx([np.log(2), 0.0, 0.5004], abs=1e-4)
    assert uncertainty(p, "margin") == pytest.approx([1.0, 0.0, 0.4])
    with pytest.raises(ConfigError, match="'bald' is not one of entropy, margin"):
        uncertainty(p, "bald")


def test_rank_candidates_prefers_uncertain_and_skips_near_duplicates():
    scores = np.array([0.90, 0.89, 0.88, 0.10, 0.05, 0.01])
    feats = np.array([[1.0, 0.0], [1.0, 0.001], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0],
                      [0.7, 0.7]])
    order, dist = rank_candidates(scores, feats, 2, pool_factor=2)
    # pool = the 4 most uncertain; 0 first; 1 is a near duplicate of 0, so 3 (opposite)
    assert order == [0, 3] and dist[0] == 0.0 and dist[1] == pytest.approx(2.0)
    order, _ = rank_candidates(scores, feats, 6, pool_factor=4)
    assert sorted(order) == list(range(6))


# ----------------------------------------------------------------- with a trained run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("suggest")
    run = tiny_run(tiny_sample(root / "sample"), root / "run")
    # same seed, more patients: the first six patients (and their keys) are the run's
    pool = tiny_sample(root / "pool", patients=10)
    return run, pool, root


def _test_patients(run) -> set[str]:
    import json

    doc = json.loads((run / "split.json").read_text())
    return {d["patient"] for d in doc["splits"]["test"]}


def test_test_patients_are_left_out_and_the_result_is_deterministic(setup):
    from vitdesk.data.sources import load_records

    run, pool, _ = setup
    test = _test_patients(run)
    recs = load_records(pool, require_labels=False)
    test_series = {r.series for r in recs if r.patient in test}
    assert test_series  # the pool shares the run's test patients
    res = suggest(run, pool, n=8, seed=3, device="cpu")
    assert len(res.suggestions) == 8
    assert res.left_out["test patients"] == sum(r.patient in test for r in recs)
    assert res.n_candidates == len(recs) - res.left_out["test patients"]
    assert not {s.series for s in res.suggestions} & test_series
    assert [s.rank for s in res.suggestions] == list(range(1, 9))
    assert all(0 <= s.slice_index < 6 and 0 < s.uncertainty <= np.log(2) + 1e-6
               for s in res.suggestions)
    # the first is the most uncertain slice of all; no slice twice
    assert res.suggestions[0].uncertainty == max(s.uncertainty for s in res.suggestions)
    assert len({(s.series, s.slice_index) for s in res.suggestions}) == 8
    again = suggest(run, pool, n=8, seed=3, device="cpu")
    assert again.suggestions == res.suggestions
    series = suggest(run, pool, n=3, unit="series", seed=3, device="cpu")
    assert len({s.series for s in series.suggestions}) == 3
    assert all(len(s.slices) == 3 and s.slices[0] == s.slice_index for s in series.suggestions)
    assert not {s.series for s in series.suggestions} & test_series


def test_the_runs_own_source_leaves_out_its_trained_slices(setup):
    run, _, root = setup
    recs, _, left, _ = candidate_records(run, root / "sample")
    assert recs == [] and left["trained on"] + left["test patients"] == 36


def test_labelled_workspace_slices_are_left_out(setup, tmp_path):
    from vitdesk.data.workspace import Workspace
    from vitdesk.imaging.scan import scan_path

    run, pool, _ = setup
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.import_scan(scan_path(pool))
    for cls in ("normal", "lesion"):
        ws.add_class(cls)
    test = _test_patients(run)
    all_series = ws.series()
    labelled = set()
    for k, s in enumerate(all_series):
        if k % 2 == 0:
            ws.set_series_label(s.key, "normal")
            labelled.update((s.key, i) for i in range(s.n_slices))
        else:
            ws.set_slice_label(s.key, 1, "lesion")
            labelled.add((s.key, 1))
    expected = {(s.key, i) for s in all_series for i in range(s.n_slices)
                if s.patient_key not in test} - labelled
    ws.close()
    res = suggest(run, tmp_path / "ws", n=100, seed=0, device="cpu", tta=None)
    got = {(s.series, s.slice_index) for s in res.suggestions}
    assert got == expected  # every candidate, and nothing labelled or of a test patient
    assert res.left_out["labelled"] == len(labelled)
    assert {s.description for s in res.suggestions} == {"Synthetic axial chest/abdomen"}
