"""Power planning by Monte Carlo simulation of the analysis the report will run.

`simulate_power` draws many synthetic studies and runs on each the same pairwise tests and correction as
`inferential.pairwise`: Wilcoxon (1945) signed-rank tests on paired participant means (within, mushra) or
Mann & Whitney (1947) U tests (between), corrected by Holm (1979), Bonferroni, Benjamini & Hochberg (1995)
or not at all. Power is the share of simulated studies in which the one differing condition comes out
significantly different, in the true direction, from every other condition.

Data model (a random-intercept model, ratings on a continuous scale): rating = participant intercept
~ N(0, participant_sd) + condition effect + residual ~ N(0, residual_sd). The first condition is shifted by
effect_size × residual_sd; the others share one mean. Each participant's mean over `ratings_per_cell`
ratings of a condition is drawn directly (its residual part has SD residual_sd / √ratings_per_cell), which
is exactly the distribution of that mean. In a between design the n participants are split as evenly as
possible over the conditions (n is the total to recruit in both designs).

Every sample size gets its own generator `numpy.random.default_rng([seed, n])`, so a point of the curve
does not depend on which other sizes were asked for. All simulated studies of a size are tested at once
(scipy's tests are vectorised along an axis).
"""

import itertools
import math

import numpy as np

from studies.analysis.errors import AnalysisError
from studies.analysis.inferential import (CORRECTIONS, adjust_pvalue_rows, rank_sum_test,
                                          signed_rank_test)
from studies.analysis.inferential import METHODS as TEST_METHODS

# Simulated studies are tested in blocks of about this many values to bound memory.
_BLOCK_VALUES = 4_000_000


def simulate_power(*, design, conditions, effect_size, n_participants, ratings_per_cell=1, participant_sd=0.5,
                   residual_sd=1.0, alpha=0.05, correction="holm", n_sim=500, seed=0, target=0.8):
    """Power curve over `n_participants` (total participants), and the smallest n reaching `target`.

    Returns {"curve": [{"n", "power", "any_significant"}], "n_needed": int | None, "target", "method"},
    the curve sorted by n. `any_significant` is the share of studies with at least one significant pair
    (the family-wise error rate when effect_size is 0).
    """
    sizes = _check_inputs(design=design, conditions=conditions, effect_size=effect_size,
                          n_participants=n_participants, ratings_per_cell=ratings_per_cell,
                          participant_sd=participant_sd, residual_sd=residual_sd, alpha=alpha,
                          correction=correction, n_sim=n_sim, target=target)
    within = design in ("within", "mushra")
    cell_sd = residual_sd / math.sqrt(ratings_per_cell)
    shift = effect_size * residual_sd
    curve = []
    for n in sizes:
        rng = np.random.default_rng([seed, n])
        if within:
            p, lean = _within_studies(rng, n=n, k=conditions, n_sim=n_sim, shift=shift,
                                      participant_sd=participant_sd, cell_sd=cell_sd)
        else:
            p, lean = _between_studies(rng, n=n, k=conditions, n_sim=n_sim, shift=shift,
                                       participant_sd=participant_sd, cell_sd=cell_sd)
        significant = adjust_pvalue_rows(p, correction) < alpha            # [n_sim, pairs]; NaN → False
        right_way = lean * np.sign(shift) > 0 if shift != 0 else np.ones_like(lean, bool)
        detected = np.all(significant[:, :conditions - 1] & right_way, axis=1)
        curve.append({"n": int(n), "power": float(detected.mean()),
                      "any_significant": float(significant.any(axis=1).mean())})
    n_needed = next((point["n"] for point in curve if point["power"] >= target), None)
    return {"curve": curve, "n_needed": n_needed, "target": float(target),
            "method": _method(design=design, conditions=conditions, effect_size=effect_size,
                              ratings_per_cell=ratings_per_cell, participant_sd=participant_sd,
                              residual_sd=residual_sd, alpha=alpha, correction=correction, n_sim=n_sim,
                              seed=seed)}


def _pairs(k):
    """All pairs (a < b); the first k − 1 are (0, b), the shifted condition against each other one."""
    return list(itertools.combinations(range(k), 2))


def _within_studies(rng, *, n, k, n_sim, shift, participant_sd, cell_sd):
    """p-values of every pair [n_sim, pairs] and, for the pairs (0, b), the direction [n_sim, k − 1]
    (+1 when condition 0 is higher: the sign of the matched-pairs rank-biserial, as in `inferential.pairwise`)."""
    means = rng.normal(0.0, participant_sd, (n_sim, n, 1)) + rng.normal(0.0, cell_sd, (n_sim, n, k))
    means[:, :, 0] += shift
    first, second = np.array(_pairs(k)).T
    p = np.empty((n_sim, len(first)))
    lean = np.empty((n_sim, k - 1))
    block = max(1, _BLOCK_VALUES // (n * len(first)))
    for start in range(0, n_sim, block):
        part = means[start:start + block]
        d = np.swapaxes(part[:, :, first] - part[:, :, second], 1, 2)  # [studies, pairs, n]
        _, p[start:start + block] = signed_rank_test(d, zero_method="wilcox", axis=-1)
        shifted = d[:, :k - 1]
        ranks = np.abs(shifted).argsort(axis=-1).argsort(axis=-1) + 1   # continuous data: no ties
        lean[start:start + block] = np.sign((np.sign(shifted) * ranks).sum(axis=-1))
    return p, lean


def _between_studies(rng, *, n, k, n_sim, shift, participant_sd, cell_sd):
    """As `_within_studies`, with the n participants split over the k conditions."""
    per_condition = [n // k + (1 if c < n % k else 0) for c in range(k)]
    total_sd = math.hypot(participant_sd, cell_sd)
    groups = [rng.normal(0.0, total_sd, (n_sim, size)) for size in per_condition]
    groups[0] += shift
    pairs = _pairs(k)
    p = np.empty((n_sim, len(pairs)))
    lean = np.empty((n_sim, k - 1))
    for j, (a, b) in enumerate(pairs):
        u, p[:, j] = rank_sum_test(groups[a], groups[b], axis=-1)
        if a == 0:
            lean[:, j] = np.sign(2 * u / (per_condition[a] * per_condition[b]) - 1)
    return p, lean


def _method(*, design, conditions, effect_size, ratings_per_cell, participant_sd, residual_sd, alpha,
            correction, n_sim, seed):
    test = TEST_METHODS["wilcoxon" if design in ("within", "mushra") else "mannwhitney"]
    split = ("" if design in ("within", "mushra")
             else " Participants are split as evenly as possible over the conditions (n is the total).")
    return (f"Monte Carlo simulation of {n_sim} studies per sample size (seed {seed}), {design} design with "
            f"{conditions} conditions: rating = participant intercept (SD {participant_sd}) + condition "
            f"effect + residual (SD {residual_sd}); one condition is shifted by {effect_size} residual SDs; "
            f"{ratings_per_cell} rating(s) per participant and condition.{split} Each study is analysed "
            f"like the report: {test} {TEST_METHODS[correction]} Power is the share of studies in which the "
            f"shifted condition differs significantly (alpha {alpha}), in the true direction, from every "
            f"other condition.")


def _check_inputs(*, design, conditions, effect_size, n_participants, ratings_per_cell, participant_sd,
                  residual_sd, alpha, correction, n_sim, target):
    if design == "pairwise":
        raise AnalysisError("Power simulation covers the rating designs (within, mushra, between), "
                            "not the pairwise preference design.")
    if design not in ("within", "mushra", "between"):
        raise AnalysisError(f"Unknown design {design!r}; choose within, mushra or between.")
    if not _whole(conditions) or conditions < 2:
        raise AnalysisError(f"conditions must be a whole number of at least 2 (got {conditions!r}).")
    if not _number(effect_size):
        raise AnalysisError(f"effect_size must be a number of residual SDs, e.g. 0.5 (got {effect_size!r}).")
    if isinstance(n_participants, (int, np.integer)):
        n_participants = [n_participants]
    sizes = list(n_participants) if n_participants is not None else []
    smallest = conditions if design == "between" else 1
    if not sizes or not all(_whole(n) and n >= smallest for n in sizes):
        raise AnalysisError(f"n_participants must be a list of whole numbers of at least {smallest} "
                            f"(total participants{', one per condition at least' if design == 'between' else ''}); "
                            f"got {n_participants!r}.")
    if not _whole(ratings_per_cell) or ratings_per_cell < 1:
        raise AnalysisError(f"ratings_per_cell must be a whole number of at least 1 (got {ratings_per_cell!r}).")
    if not _number(participant_sd) or participant_sd < 0:
        raise AnalysisError(f"participant_sd must be zero or more (got {participant_sd!r}).")
    if not _number(residual_sd) or residual_sd <= 0:
        raise AnalysisError(f"residual_sd must be more than zero (got {residual_sd!r}).")
    if not _number(alpha) or not 0 < alpha < 1:
        raise AnalysisError(f"alpha must be between 0 and 1, e.g. 0.05 (got {alpha!r}).")
    if correction not in CORRECTIONS:
        raise AnalysisError(f"Unknown correction {correction!r}; choose one of {', '.join(CORRECTIONS)}.")
    if not _whole(n_sim) or n_sim < 1:
        raise AnalysisError(f"n_sim must be a whole number of simulated studies, e.g. 500 (got {n_sim!r}).")
    if not _number(target) or not 0 < target <= 1:
        raise AnalysisError(f"target must be a power between 0 and 1, e.g. 0.8 (got {target!r}).")
    return sorted({int(n) for n in sizes})


def _whole(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value)
