"""Adaptive relevance cut-off: drop the clearly irrelevant tail of a ranked list, per query.

A fixed score threshold does not work (how high a relevant cosine is varies per query and per modality:
text->image cosines are ~0.02-0.1, image->image ~0.5-0.9). So the decision looks only at the shape of
this query's own score curve, and cuts only where the curve has a gap that noise cannot explain.

How it decides (a spacing test on the top of the ranked list):

1. Take the best `window` scores s_1 >= s_2 >= ... >= s_n (n <= window, default 100) out of a searched
   population of N photos (N >= n; everything that passed the filters).
2. Without any relevant group, those scores are the top order statistics of one smooth "background"
   distribution. Its tail is close to exponential, and then the rank-weighted gaps
       D_i = w_i * (s_i - s_{i+1}),   w_i = i * (N - i) / N   (~ i when N >> i)
   are independent and identically exponential (Renyi's representation of order statistics; the
   (N - i) / N factor does the same for the bottom end when a small population lies wholly in the window).
3. The background scale is estimated robustly as beta = median(D) / ln 2 (the median ignores the few
   big gaps that relevant groups make).
4. The candidate cut is after the rank i* with the largest D_i, among ranks 1 .. min(n - 1, N / 2)
   (a "relevant" group bigger than half of all photos would not be a tail to hide).
5. Under the no-gap hypothesis P(D_i* > d) = exp(-d / beta) for each of the m candidate ranks; with a
   Bonferroni correction the p-value is m * exp(-D_i* / beta). The list is cut after rank i* only if
   that p-value is below `alpha` (default 0.01): the cut keeps s_1..s_i* and drops everything after.
6. No cut with fewer than `min_scores` scores (default 8: too little evidence), or when beta is 0
   (over half of the gaps are exact ties, as in a library of identical images).

So a smooth curve is never cut (the user sees everything, in order), and a cut, when it happens, falls at
the most significant gap, which is where a cluster of real matches ends.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

WINDOW = 100
MIN_SCORES = 8
ALPHA = 0.01


@dataclass(frozen=True)
class Cutoff:
    """The decision: keep the first `keep` hits. `cut` is False when nothing was dropped."""
    keep: int
    cut: bool
    considered: int  # scores the decision looked at
    threshold: float | None = None  # lowest kept score, when cut
    next_score: float | None = None  # best dropped score, when cut
    p_value: float | None = None  # of the chosen gap under "no real gap"


def adaptive_cutoff(scores: Sequence[float], population: int | None = None, alpha: float = ALPHA,
                    window: int = WINDOW, min_scores: int = MIN_SCORES) -> Cutoff:
    """Where to cut a best-first score list. `population` = how many items were ranked (default: len)."""
    s = np.asarray(list(scores)[:window], dtype=np.float64)
    n = len(s)
    total = max(int(population or len(scores)), len(scores))
    keep_all = Cutoff(keep=len(scores), cut=False, considered=n)
    if n < min_scores:
        return keep_all
    ranks = np.arange(1, n, dtype=np.float64)
    gaps = np.maximum(s[:-1] - s[1:], 0.0)
    spacings = ranks * (total - ranks) / total * gaps
    beta = float(np.median(spacings)) / math.log(2)
    candidates = int(min(n - 1, total // 2))
    if beta <= 0 or candidates < 1:
        return keep_all
    best = int(np.argmax(spacings[:candidates]))
    p_value = min(1.0, candidates * math.exp(-spacings[best] / beta))
    if p_value >= alpha:
        return Cutoff(keep=len(scores), cut=False, considered=n, p_value=p_value)
    keep = best + 1
    return Cutoff(keep=keep, cut=True, considered=n, threshold=float(s[best]), next_score=float(s[keep]),
                  p_value=p_value)
