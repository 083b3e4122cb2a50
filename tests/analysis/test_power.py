"""power.simulate_power: behaves like power (rises with n and effect, ≈ 1 for large effects, error rate at
alpha under the null), agrees with a slow simulation written here with scipy and statsmodels, and picks
the smallest sufficient n."""

import itertools
import time

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from studies.analysis.errors import AnalysisError
from studies.analysis.power import simulate_power


def powers(result):
    return [point["power"] for point in result["curve"]]


def test_power_rises_with_n_and_reaches_one():
    result = simulate_power(design="within", conditions=3, effect_size=0.8, n_participants=[8, 20, 60, 150],
                            n_sim=300)
    assert [p["n"] for p in result["curve"]] == [8, 20, 60, 150]
    assert np.all(np.diff(powers(result)) > 0)
    assert powers(result)[-1] >= 0.99
    assert result["target"] == 0.8 and "Wilcoxon" in result["method"] and "Holm" in result["method"]


def test_power_rises_with_effect_size():
    for design in ("within", "between"):
        curve = [simulate_power(design=design, conditions=3, effect_size=effect, n_participants=[45],
                                n_sim=300)["curve"][0]["power"] for effect in (0.2, 0.6, 1.2)]
        assert curve[0] < curve[1] < curve[2], design


def test_large_effect_and_large_n_give_power_near_one():
    for design in ("mushra", "between"):
        result = simulate_power(design=design, conditions=4, effect_size=2.0, n_participants=[200], n_sim=200)
        assert result["curve"][0]["power"] >= 0.99


@pytest.mark.parametrize("design", ["within", "between"])
def test_no_effect_keeps_the_family_wise_error_at_alpha(design):
    """Holm controls the chance of any significant pair; with no correction it is far above alpha."""
    kwargs = dict(design=design, conditions=4, effect_size=0.0, n_participants=[40], n_sim=1000, seed=3)
    holm = simulate_power(**kwargs)["curve"][0]
    assert holm["any_significant"] <= 0.05 + 0.02     # 0.02 ≈ 3 Monte Carlo SEs at 1000 studies
    uncorrected = simulate_power(**kwargs, correction="none")["curve"][0]
    assert uncorrected["any_significant"] > 0.12        # six tests at 0.05: about 0.2


def holm_rejects(p, alpha):
    """Holm (1979) step-down, written out: reject the i-th smallest p while p_(i) ≤ alpha / (m − i + 1)."""
    reject = np.zeros(len(p), bool)
    for i, j in enumerate(np.argsort(p)):
        if p[j] > alpha / (len(p) - i):
            break
        reject[j] = True
    return reject


def test_holm_helper_agrees_with_statsmodels():
    rng = np.random.default_rng(1)
    for _ in range(4):   # statsmodels' multipletests runs gc.collect() on every call: keep this short
        p = rng.uniform(0, 0.1, 5)
        assert list(holm_rejects(p, 0.05)) == list(multipletests(p, alpha=0.05, method="holm")[0])


@pytest.mark.parametrize("design, n, effect", [("within", 24, 0.7), ("between", 45, 1.2)])
def test_agrees_with_a_direct_simulation(design, n, effect):
    """Same model simulated rating by rating here, tested with scipy, corrected study by study by hand."""
    conditions, per_cell, n_sim = 3, 2, 400
    result = simulate_power(design=design, conditions=conditions, effect_size=effect, n_participants=[n],
                            ratings_per_cell=per_cell, participant_sd=0.5, residual_sd=1.0, n_sim=500)
    rng = np.random.default_rng(99)
    if design == "within":
        intercept = rng.normal(0, 0.5, (n_sim, n, 1, 1))
        ratings = intercept + rng.normal(0, 1.0, (n_sim, n, conditions, per_cell))
        ratings[:, :, 0] += effect
        means = ratings.mean(axis=3)                                       # study × participant × condition
        samples = [means[:, :, c] for c in range(conditions)]
    else:
        size = n // conditions
        samples = [(rng.normal(0, 0.5, (n_sim, size, 1)) + rng.normal(0, 1.0, (n_sim, size, per_cell))).mean(axis=2)
                   + (effect if c == 0 else 0.0) for c in range(conditions)]
    p, higher = [], []
    for a, b in itertools.combinations(range(conditions), 2):
        if design == "within":
            p.append(stats.wilcoxon(samples[a], samples[b], axis=1).pvalue)
            higher.append(np.median(samples[a] - samples[b], axis=1) > 0)
        else:
            p.append(stats.mannwhitneyu(samples[a], samples[b], alternative="two-sided", axis=1).pvalue)
            higher.append(np.median(samples[a], axis=1) > np.median(samples[b], axis=1))
    p, higher = np.array(p).T, np.array(higher).T                            # study × pair
    detected = 0
    for study in range(n_sim):
        reject = holm_rejects(p[study], 0.05)
        detected += all(reject[j] and higher[study, j] for j in range(conditions - 1))   # pairs (0, b)
    expected = detected / n_sim
    assert 0.2 < expected < 0.95                                             # a point where power can differ
    # Monte Carlo SE of the difference ≈ sqrt(0.25/500 + 0.25/400) ≈ 0.034
    assert result["curve"][0]["power"] == pytest.approx(expected, abs=0.1)


def test_n_needed_is_the_smallest_listed_n_reaching_the_target():
    result = simulate_power(design="within", conditions=2, effect_size=0.6, n_participants=[200, 10, 40, 80, 20],
                            n_sim=300, target=0.7)
    curve = {point["n"]: point["power"] for point in result["curve"]}
    assert list(curve) == [10, 20, 40, 80, 200]
    reaching = [n for n in sorted(curve) if curve[n] >= 0.7]
    assert reaching and result["n_needed"] == reaching[0]
    assert curve[reaching[0]] >= 0.7 and all(curve[n] < 0.7 for n in curve if n < reaching[0])
    unreachable = simulate_power(design="within", conditions=2, effect_size=0.1, n_participants=[10, 20],
                                 n_sim=100, target=0.95)
    assert unreachable["n_needed"] is None


def test_deterministic_and_each_n_independent_of_the_others():
    kwargs = dict(design="between", conditions=3, effect_size=0.5, n_sim=200, seed=5)
    both = simulate_power(n_participants=[30, 60], **kwargs)
    assert both == simulate_power(n_participants=[30, 60], **kwargs)
    assert simulate_power(n_participants=[60], **kwargs)["curve"][0] == both["curve"][1]
    assert simulate_power(n_participants=[60], **{**kwargs, "seed": 6})["curve"][0] != both["curve"][1]


@pytest.mark.parametrize("change, message", [
    ({"design": "pairwise"}, "rating designs"),
    ({"design": "latin"}, "Unknown design"),
    ({"conditions": 1}, "conditions"),
    ({"n_participants": []}, "n_participants"),
    ({"design": "between", "n_participants": [2]}, "n_participants"),
    ({"correction": "sidak"}, "correction"),
    ({"alpha": 5}, "alpha"),
    ({"n_sim": 0}, "n_sim"),
    ({"residual_sd": 0}, "residual_sd"),
])
def test_bad_input_raises(change, message):
    kwargs = dict(design="within", conditions=3, effect_size=0.5, n_participants=[10], n_sim=10)
    with pytest.raises(AnalysisError, match=message):
        simulate_power(**{**kwargs, **change})


def test_planning_run_is_quick():
    """n_sim = 500 for five sample sizes and four conditions: a few seconds at most."""
    start = time.perf_counter()
    simulate_power(design="within", conditions=4, effect_size=0.5, n_participants=[10, 20, 40, 80, 160])
    assert time.perf_counter() - start < 8
