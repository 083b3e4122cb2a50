"""Win rates, Bradley–Terry scores and the matched-vs-mismatched binomial test, each checked against a
hand-worked example or an independent computation (scipy.optimize, scipy.stats.binomtest)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from studies.analysis.errors import AnalysisError
from studies.analysis.preference import bradley_terry, matched_vs_mismatched, win_matrix, win_rates


def choices(rows):
    """rows: (participant, pair_a, pair_b, choice)."""
    return pd.DataFrame(rows, columns=["participant", "pair_a", "pair_b", "choice"])


def trials_from_counts(wins, names, *, participants=1):
    """One row per trial from wins[i][j] = trials i won against j, spread over `participants`."""
    rows, t = [], 0
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            for _ in range(int(wins[i][j])):
                # alternate sides so both A and B choices occur
                row = (a, b, "A") if t % 2 == 0 else (b, a, "B")
                rows.append((f"p{t % participants}",) + row)
                t += 1
    return choices(rows)


def bt_mle_by_scipy(wins):
    """Independent maximisation of the Bradley–Terry log-likelihood Σ_ij w_ij log σ(s_i − s_j) (w_ij may
    hold half wins for ties), with the first score fixed at 0, then centred."""
    wins = np.asarray(wins, dtype=float)
    k = len(wins)

    def negative_loglik(free):
        s = np.r_[0.0, free]
        diff = s[:, None] - s[None, :]
        return -(wins * -np.logaddexp(0.0, -diff)).sum()

    found = optimize.minimize(negative_loglik, np.zeros(k - 1), method="BFGS", options={"gtol": 1e-10})
    s = np.r_[0.0, found.x]
    return s - s.mean()


def scores_by_name(table):
    return dict(zip(table["condition"], table["score"]))


# --- win rates ---------------------------------------------------------------------------------------------

def test_win_rates_split_ties_in_a_hand_worked_example():
    df = choices([
        ("p1", "a", "b", "A"),    # a beats b
        ("p1", "b", "c", "a"),    # b beats c (lower-case choice accepted)
        ("p2", "a", "c", "tie"),  # half a win each to a and c
        ("p2", "c", "a", "B"),    # a beats c
        ("p3", "d", "d", "A"),    # a condition against itself: no preference, left out
    ])
    table = win_rates(df).set_index("condition")
    # a: 2 wins, 0 losses, 1 tie -> (2 + 0.5) / 3; b: 1-1-0 -> 1/2; c: 0-2-1 -> 0.5/3; d: no real trial
    assert table.loc["a", ["wins", "losses", "ties", "n"]].tolist() == [2, 0, 1, 3]
    assert table.loc["b", ["wins", "losses", "ties", "n"]].tolist() == [1, 1, 0, 2]
    assert table.loc["c", ["wins", "losses", "ties", "n"]].tolist() == [0, 2, 1, 3]
    assert table.loc["a", "win_rate"] == pytest.approx(2.5 / 3)
    assert table.loc["b", "win_rate"] == pytest.approx(0.5)
    assert table.loc["c", "win_rate"] == pytest.approx(0.5 / 3)
    assert table.loc["d", "n"] == 0 and math.isnan(table.loc["d", "win_rate"])
    assert list(win_rates(df)["condition"][:3]) == ["a", "b", "c"]  # highest win rate first
    assert "itself" in win_rates(df).attrs["note"]

    matrix = win_matrix(df)
    assert matrix.loc["a", "c"] == pytest.approx(0.75)  # one tie + one win out of two trials
    assert matrix.loc["c", "a"] == pytest.approx(0.25)
    assert matrix.loc["a", "b"] == 1.0 and matrix.loc["b", "a"] == 0.0
    assert math.isnan(matrix.loc["a", "a"]) and math.isnan(matrix.loc["b", "d"])
    assert matrix.attrs["n_trials"]["a"]["c"] == 2


# --- Bradley–Terry ------------------------------------------------------------------------------------------

def test_bradley_terry_hand_worked_three_conditions():
    """Strengths γ = (4, 2, 1) give P(a>b) = 4/6, P(a>c) = 4/5, P(b>c) = 2/3. With 30 trials per pair and
    observed wins equal to those expectations (20, 24, 20), the likelihood equations
    W_i = Σ_j n_ij γ_i / (γ_i + γ_j) hold exactly at γ ∝ (4, 2, 1), so the MLE log-strengths centred
    to mean 0 are (log 2, 0, −log 2)."""
    wins = [[0, 20, 24], [10, 0, 20], [6, 10, 0]]
    table = bradley_terry(trials_from_counts(wins, ["a", "b", "c"], participants=6), n_boot=0)
    score = scores_by_name(table)
    assert score["a"] == pytest.approx(math.log(2), abs=1e-7)
    assert score["b"] == pytest.approx(0.0, abs=1e-7)
    assert score["c"] == pytest.approx(-math.log(2), abs=1e-7)
    assert table["ci_low"].isna().all() and table.attrs["note"] == ""


def test_bradley_terry_matches_an_independent_maximisation_with_ties():
    rng = np.random.default_rng(11)
    names = ["m1", "m2", "m3", "m4", "m5"]
    rows, wins = [], np.zeros((5, 5))
    for t in range(400):
        i, j = rng.choice(5, size=2, replace=False)
        choice = rng.choice(["A", "B", "tie"], p=[0.3 + 0.08 * i, 0.6 - 0.08 * i, 0.1])
        rows.append((f"p{t % 20}", names[i], names[j], choice))
        share = {"A": 1.0, "B": 0.0, "tie": 0.5}[choice]
        wins[i, j] += share
        wins[j, i] += 1 - share
    score = scores_by_name(bradley_terry(choices(rows), n_boot=0))
    expected = bt_mle_by_scipy(wins)
    assert [score[n] for n in names] == pytest.approx(expected, abs=1e-6)


def simulated_choices(strengths, *, participants, trials_each, seed):
    rng = np.random.default_rng(seed)
    k, n = len(strengths), participants * trials_each
    a = rng.integers(0, k, n)
    b = (a + rng.integers(1, k, n)) % k
    p_a = 1.0 / (1.0 + np.exp(-(strengths[a] - strengths[b])))
    names = np.array([f"s{i}" for i in range(k)])
    return choices({"participant": np.repeat([f"p{i}" for i in range(participants)], trials_each),
                    "pair_a": names[a], "pair_b": names[b],
                    "choice": np.where(rng.random(n) < p_a, "A", "B")}), names


def test_bradley_terry_recovers_known_strengths():
    truth = np.linspace(-1.2, 1.2, 8)
    df, names = simulated_choices(truth, participants=300, trials_each=30, seed=5)
    table = bradley_terry(df, n_boot=500, seed=1).set_index("condition")
    estimate = table.loc[names, "score"].to_numpy()
    assert np.abs(estimate - (truth - truth.mean())).max() < 0.12
    covered = (table.loc[names, "ci_low"] <= truth - truth.mean()) & \
        (truth - truth.mean() <= table.loc[names, "ci_high"])
    assert covered.sum() >= 6
    assert (table["ci_low"] <= table["score"]).all() and (table["score"] <= table["ci_high"]).all()


def test_bradley_terry_bootstrap_interval_agrees_with_a_direct_participant_bootstrap():
    """Two conditions: the MLE is ½·log(W_ab / W_ba). An independent bootstrap over participants (its
    own draws) must give the same percentile interval up to Monte Carlo error."""
    rng = np.random.default_rng(2)
    people = 60
    p_win = rng.uniform(0.35, 0.95, people)  # participants differ, so resampling them matters
    rows, per_person = [], np.zeros((people, 2))
    for p in range(people):
        for t in range(12):
            a_wins = rng.random() < p_win[p]
            swap = t % 2 == 1
            pair = ("y", "x") if swap else ("x", "y")
            choice = ("B" if a_wins else "A") if swap else ("A" if a_wins else "B")
            rows.append((f"p{p}", *pair, choice))
            per_person[p, 0 if a_wins else 1] += 1
    table = bradley_terry(choices(rows), n_boot=4000, seed=3).set_index("condition")
    draws = rng.integers(0, people, (4000, people))
    won = per_person[draws].sum(1)
    boot = 0.5 * np.log(won[:, 0] / won[:, 1])
    low, high = np.quantile(boot, [0.025, 0.975])
    total = per_person.sum(0)
    assert table.loc["x", "score"] == pytest.approx(0.5 * math.log(total[0] / total[1]), abs=1e-7)
    assert table.loc["x", "ci_low"] == pytest.approx(low, abs=0.03)
    assert table.loc["x", "ci_high"] == pytest.approx(high, abs=0.03)
    assert table.loc["y", "ci_low"] == pytest.approx(-high, abs=0.03)


def test_bradley_terry_is_deterministic_given_the_seed():
    df, _ = simulated_choices(np.array([0.0, 0.4, 0.8]), participants=40, trials_each=10, seed=9)
    first, again = bradley_terry(df, n_boot=300, seed=4), bradley_terry(df, n_boot=300, seed=4)
    other = bradley_terry(df, n_boot=300, seed=5)
    pd.testing.assert_frame_equal(first, again)
    assert not np.allclose(first["ci_low"], other["ci_low"])


def test_condition_that_never_wins_gets_a_finite_regularised_score():
    wins = [[0, 6, 5], [3, 0, 4], [0, 0, 0]]  # c never wins: the MLE puts it at −∞
    table = bradley_terry(trials_from_counts(wins, ["a", "b", "c"], participants=5), n_boot=200, seed=0)
    score = scores_by_name(table)
    assert all(np.isfinite(list(score.values())))
    assert table["condition"].iloc[-1] == "c"
    assert "never won: c" in table.attrs["note"]
    # the documented rule: one virtual tie (half a win each side) on every compared pair
    regularised = np.asarray(wins, dtype=float) + 0.5 * (1 - np.eye(3))
    assert [score[n] for n in "abc"] == pytest.approx(bt_mle_by_scipy(regularised), abs=1e-6)
    assert np.isfinite(table[["ci_low", "ci_high"]].to_numpy()).all()


def test_disconnected_comparisons_are_scored_within_each_group():
    df = choices([("p1", "a", "b", "A"), ("p1", "a", "b", "A"), ("p2", "b", "a", "A"),
                  ("p2", "x", "y", "B"), ("p3", "y", "x", "A"), ("p3", "y", "x", "tie"),
                  ("p4", "lonely", "lonely", "A")])
    table = bradley_terry(df, n_boot=100, seed=0)
    score = scores_by_name(table)
    # two conditions: ½·log(W_ab / W_ba); a won 2 of 3 vs b, y won 2.5 of 3 vs x (a tie = half)
    assert score["a"] == pytest.approx(0.5 * math.log(2 / 1), abs=1e-7)
    assert score["a"] + score["b"] == pytest.approx(0.0, abs=1e-9)
    assert score["y"] == pytest.approx(0.5 * math.log(2.5 / 0.5), abs=1e-7)
    assert score["x"] + score["y"] == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(score["lonely"])
    note = table.attrs["note"]
    assert "2 groups" in note and "{a, b}" in note and "{x, y}" in note and "lonely" in note
    assert table.attrs["groups"] == [["a", "b"], ["x", "y"]]


def test_bradley_terry_bad_input_raises_analysis_error():
    with pytest.raises(AnalysisError, match="choice"):
        bradley_terry(pd.DataFrame({"participant": ["p"], "pair_a": ["a"], "pair_b": ["b"]}))
    with pytest.raises(AnalysisError, match="not A, B or tie"):
        bradley_terry(choices([("p", "a", "b", "left")]))
    with pytest.raises(AnalysisError, match="n_boot"):
        bradley_terry(choices([("p", "a", "b", "A")]), n_boot=-1)
    empty = bradley_terry(choices([]), n_boot=10)
    assert empty.empty and "No trials" in empty.attrs["note"]


# --- matched vs mismatched ---------------------------------------------------------------------------------

@pytest.mark.parametrize("won, lost, ties", [(37, 15, 4), (10, 10, 0), (3, 17, 2), (1, 0, 0), (0, 6, 1),
                                             (61, 49, 7)])
def test_matched_vs_mismatched_matches_scipy_binomtest(won, lost, ties):
    rows = []
    for t in range(won):  # matched on either side, against either mismatched condition
        rows.append(("p", "real", f"mis{t % 2}", "A") if t % 2 else ("p", f"mis{t % 2}", "real", "B"))
    for t in range(lost):
        rows.append(("p", "real", f"mis{t % 2}", "B") if t % 2 else ("p", f"mis{t % 2}", "real", "A"))
    rows += [("p", "real", "mis0", "tie")] * ties
    rows += [("p", "mis0", "mis1", "A")] * 5 + [("p", "real", "other", "A")] * 5  # not matched vs mismatched
    result = matched_vs_mismatched(choices(rows), matched="real", mismatched=["mis0", "mis1"])
    reference = stats.binomtest(won, won + lost, 0.5, alternative="two-sided")
    interval = reference.proportion_ci(confidence_level=0.95, method="exact")
    assert result["n"] == won + lost and result["matched_wins"] == won
    assert result["share"] == pytest.approx(won / (won + lost))
    assert result["p"] == pytest.approx(reference.pvalue, rel=1e-9)
    assert result["ci_low"] == pytest.approx(interval.low, abs=1e-9)
    assert result["ci_high"] == pytest.approx(interval.high, abs=1e-9)
    assert (f"{ties} tied" in result["note"]) == (ties > 0)
    json.dumps(result)
    assert all(type(v) in (int, float, str) for v in result.values())


def test_matched_vs_mismatched_without_trials_gives_a_note():
    result = matched_vs_mismatched(choices([("p", "real", "mis", "tie"), ("p", "a", "b", "A")]),
                                   matched="real", mismatched="mis")
    assert result["n"] == 0 and result["p"] is None and result["share"] is None
    assert "No test" in result["note"] and "1 tied" in result["note"]
    missing = matched_vs_mismatched(choices([("p", "a", "b", "A")]), matched="real", mismatched=["mis"])
    assert "do not appear" in missing["note"]
    with pytest.raises(AnalysisError, match="both as matched and as mismatched"):
        matched_vs_mismatched(choices([("p", "a", "b", "A")]), matched="a", mismatched=["a", "b"])
    with pytest.raises(AnalysisError, match="at least one mismatched"):
        matched_vs_mismatched(choices([("p", "a", "b", "A")]), matched="a", mismatched=[])
