"""The adaptive cut-off on synthetic score curves."""
from __future__ import annotations

import numpy as np

from search.cutoff import MIN_SCORES, adaptive_cutoff


def top_scores(values, k=100):
    return list(np.sort(values)[::-1][:k])


def background(rng, n):
    """Cosines of unrelated photos: a bell curve around 0.02 (text->image scale)."""
    return rng.normal(0.02, 0.015, n)


def test_a_smooth_curve_is_rarely_cut_and_never_near_the_top():
    rng = np.random.default_rng(7)
    decisions = [adaptive_cutoff(top_scores(background(rng, 10_000)), 10_000) for _ in range(200)]
    cuts = [d for d in decisions if d.cut]
    assert len(cuts) <= 10  # ~2-3% expected for pure noise
    assert all(d.keep >= 5 for d in cuts)


def test_a_separated_group_is_kept_exactly():
    rng = np.random.default_rng(1)
    scores = background(rng, 10_000)
    scores[:12] = rng.normal(0.14, 0.01, 12)  # 12 real matches, well above the background's top (~0.08)
    decision = adaptive_cutoff(top_scores(scores), 10_000)
    assert decision.cut and decision.keep == 12
    assert decision.threshold > decision.next_score
    assert decision.p_value < 0.01


def test_one_standout_match_is_kept_alone():
    rng = np.random.default_rng(2)
    scores = background(rng, 5_000)
    scores[0] = 0.5
    decision = adaptive_cutoff(top_scores(scores), 5_000)
    assert decision.cut and decision.keep == 1


def test_too_few_scores_or_ties_are_never_cut():
    assert not adaptive_cutoff([0.9, 0.1, 0.1, 0.1][:MIN_SCORES - 1]).cut
    assert not adaptive_cutoff([0.3] * 50).cut


def test_a_small_population_is_not_cut_at_its_bottom():
    """All 30 photos are in the window: a couple of very low scores at the end are not a 'relevant group'."""
    rng = np.random.default_rng(3)
    scores = sorted(list(rng.normal(0.05, 0.01, 28)) + [-0.3, -0.4], reverse=True)
    assert not adaptive_cutoff(scores, 30).cut


def test_the_cut_ignores_scores_beyond_the_window():
    rng = np.random.default_rng(4)
    head = top_scores(background(rng, 10_000))
    long_list = head + list(np.linspace(head[-1] - 0.001, -1, 500))
    assert adaptive_cutoff(long_list, 10_000).considered == 100
