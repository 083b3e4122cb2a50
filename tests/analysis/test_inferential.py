"""inferential: every statistic and p-value against scipy.stats / statsmodels called here on the same
participant means, hand-worked corrections and effect sizes, and degenerate data that must give notes."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from studies.analysis.errors import AnalysisError
from studies.analysis.inferential import (CORRECTIONS, METHODS, adjust_pvalues, cliffs_delta, omnibus, pairwise,
                                          participant_means, rank_biserial_paired)


def likert(seed=0, participants=24, conditions=("A", "B", "C", "D"), shift=None, repeats=2, skip=()):
    """Integer 1..5 ratings (many ties, some zero differences between participant means)."""
    rng = np.random.default_rng(seed)
    shift = shift or {"A": 1.0, "B": 0.4}
    rows = []
    for p in range(participants):
        for condition in conditions:
            if (p, condition) in skip:
                continue
            for _ in range(repeats):
                value = float(np.clip(np.round(3 + shift.get(condition, 0) + rng.normal(0, 1.1)), 1, 5))
                rows.append({"participant": f"p{p:02d}", "condition": condition, "value": value})
    return pd.DataFrame(rows)


def between(seed=0, per_condition=(9, 12, 15), shift=(0.9, 0.3, 0.0)):
    rng = np.random.default_rng(seed)
    rows = []
    for c, (size, delta) in enumerate(zip(per_condition, shift)):
        for p in range(size):
            for _ in range(3):
                value = float(np.clip(np.round(3 + delta + rng.normal(0, 1.2)), 1, 5))
                rows.append({"participant": f"c{c}p{p}", "condition": "ABC"[c], "value": value})
    return pd.DataFrame(rows)


def means_by_hand(df):
    """Participant × condition mean matrix, computed independently of the module (pivot_table)."""
    return df.pivot_table(index="participant", columns="condition", values="value", aggfunc="mean")


def test_participant_means_match_pivot_table():
    df = likert(seed=1, skip={(3, "B")})
    pd.testing.assert_frame_equal(participant_means(df), means_by_hand(df), check_names=False)


# --------------------------------------------------------------------------------------------------
# Omnibus


def test_friedman_matches_scipy_on_complete_participants():
    df = likert(seed=2, skip={(0, "C"), (5, "A")})
    result = omnibus(df, design="within")
    matrix = means_by_hand(df).dropna()
    expected = stats.friedmanchisquare(*[matrix[c].to_numpy() for c in matrix.columns])
    assert result["test"] == "friedman"
    assert result["statistic"] == pytest.approx(expected.statistic, rel=1e-12)
    assert result["p"] == pytest.approx(expected.pvalue, rel=1e-12)
    assert result["df"] == 3 and result["n_participants"] == len(matrix) == 22
    assert "2 participant(s) did not rate every condition" in result["note"]


def test_two_conditions_report_wilcoxon_instead_of_friedman():
    df = likert(seed=3, conditions=("A", "B"))
    result = omnibus(df, design="mushra")
    matrix = means_by_hand(df)
    expected = stats.wilcoxon(matrix["A"], matrix["B"])
    assert result["test"] == "wilcoxon" and "Wilcoxon" in result["note"]
    assert result["statistic"] == pytest.approx(expected.statistic)
    assert result["p"] == pytest.approx(expected.pvalue, rel=1e-12)


def test_kruskal_wallis_matches_scipy():
    df = between(seed=4)
    result = omnibus(df, design="between")
    matrix = means_by_hand(df)
    expected = stats.kruskal(*[matrix[c].dropna().to_numpy() for c in "ABC"])
    assert result["test"] == "kruskal" and result["df"] == 2 and result["n_participants"] == 36
    assert result["statistic"] == pytest.approx(expected.statistic, rel=1e-12)
    assert result["p"] == pytest.approx(expected.pvalue, rel=1e-12)
    assert result["note"] == ""


# --------------------------------------------------------------------------------------------------
# Pairwise


@pytest.mark.parametrize("zero_method", ["wilcox", "pratt"])
@pytest.mark.parametrize("participants", [6, 30, 70])  # permutation/exact, normal approximation, n > 50
def test_wilcoxon_pairs_match_scipy(zero_method, participants):
    df = likert(seed=participants, participants=participants, repeats=1)
    rows = pairwise(df, design="within", correction="holm", zero_method=zero_method)
    matrix = means_by_hand(df)
    assert [(r["a"], r["b"]) for r in rows] == list(itertools.combinations("ABCD", 2))
    saw_zero = False
    for row in rows:
        x, y = matrix[row["a"]].to_numpy(), matrix[row["b"]].to_numpy()
        saw_zero |= bool(np.any(x == y))
        expected = stats.wilcoxon(x, y, zero_method=zero_method)
        assert row["test"] == "wilcoxon" and row["n"] == participants
        assert row["statistic"] == pytest.approx(expected.statistic, rel=1e-12)
        assert row["p"] == pytest.approx(expected.pvalue, rel=1e-12)
        d = x - y
        assert row["cohens_d"] == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12)
        assert row["mean_a"] == pytest.approx(x.mean()) and row["mean_b"] == pytest.approx(y.mean())
    assert saw_zero, "the data should contain zero differences"
    raw = [r["p"] for r in rows]
    assert [r["p_adj"] for r in rows] == pytest.approx(list(multipletests(raw, method="holm")[1]), rel=1e-12)
    assert [r["significant"] for r in rows] == [r["p_adj"] < 0.05 for r in rows]


@pytest.mark.parametrize("zero_method", ["wilcox", "pratt"])
def test_small_samples_with_ties_and_zeros_match_scipy_permutation_test(zero_method):
    """n ≤ 13 with ties or zeros: scipy enumerates all sign flips; the module does the same enumeration."""
    rng = np.random.default_rng(15)
    for n in (3, 7, 10):
        a = rng.integers(1, 6, n).astype(float)
        b = np.where(rng.random(n) < 0.3, a, rng.integers(1, 6, n)).astype(float)   # some zero differences
        df = pd.DataFrame({"participant": np.tile([f"p{i}" for i in range(n)], 2),
                           "condition": np.repeat(["A", "B"], n), "value": np.concatenate([a, b])})
        row = pairwise(df, design="within", zero_method=zero_method)[0]
        expected = stats.wilcoxon(a, b, zero_method=zero_method)
        assert row["statistic"] == pytest.approx(expected.statistic)
        assert row["p"] == pytest.approx(expected.pvalue, rel=1e-12)


def test_rank_biserial_within_agrees_with_scipy_rank_sums():
    """With zeros dropped, r = (T+ − T−) / (n(n+1)/2), T+ being scipy's one-sided statistic."""
    df = likert(seed=5, participants=30)
    matrix = means_by_hand(df)
    for row in pairwise(df, design="within"):
        d = (matrix[row["a"]] - matrix[row["b"]]).to_numpy()
        n = int(np.count_nonzero(d))
        t_plus = stats.wilcoxon(d, alternative="greater").statistic
        total = n * (n + 1) / 2
        assert row["rank_biserial"] == pytest.approx((t_plus - (total - t_plus)) / total, rel=1e-12)


def test_mann_whitney_pairs_match_scipy():
    df = between(seed=6, per_condition=(6, 7, 20))  # a small pair (exact when untied) and large ones
    rows = pairwise(df, design="between", correction="bh")
    matrix = means_by_hand(df)
    for row in rows:
        x, y = matrix[row["a"]].dropna().to_numpy(), matrix[row["b"]].dropna().to_numpy()
        expected = stats.mannwhitneyu(x, y, alternative="two-sided")
        assert row["test"] == "mannwhitney"
        assert (row["n"], row["n_a"], row["n_b"]) == (len(x) + len(y), len(x), len(y))
        assert row["statistic"] == pytest.approx(expected.statistic)
        assert row["p"] == pytest.approx(expected.pvalue, rel=1e-12)
        u_b = stats.mannwhitneyu(y, x).statistic
        assert row["rank_biserial"] == pytest.approx(1 - 2 * u_b / (len(x) * len(y)), rel=1e-12)
        pooled = np.sqrt(((len(x) - 1) * x.var(ddof=1) + (len(y) - 1) * y.var(ddof=1)) / (len(x) + len(y) - 2))
        assert row["cohens_d"] == pytest.approx((x.mean() - y.mean()) / pooled, rel=1e-12)
        assert row["cliffs_delta"] == pytest.approx(brute_force_cliff(x, y), rel=1e-12)
    raw = [r["p"] for r in rows]
    assert [r["p_adj"] for r in rows] == pytest.approx(list(multipletests(raw, method="fdr_bh")[1]), rel=1e-12)


def test_direction_names_the_condition_rated_higher():
    df = likert(seed=7, participants=40, shift={"A": 2.0, "D": -1.5})
    rows = {(r["a"], r["b"]): r for r in pairwise(df, design="within")}
    assert rows[("A", "B")]["significant"] and rows[("A", "B")]["direction"] == "a"
    assert rows[("C", "D")]["significant"] and rows[("C", "D")]["direction"] == "a"
    assert rows[("B", "D")]["direction"] == "a"
    assert rows[("A", "D")]["rank_biserial"] > 0 and rows[("A", "D")]["cliffs_delta"] > 0
    flipped = {(r["a"], r["b"]): r for r in pairwise(df.replace({"condition": {"A": "Z"}}), design="within")}
    assert flipped[("B", "Z")]["direction"] == "b"
    for row in rows.values():
        if not row["significant"]:
            assert row["direction"] == ""


def test_rows_are_json_plain():
    rows = pairwise(likert(seed=8), design="within")
    json.dumps(rows)
    json.dumps(omnibus(likert(seed=8), design="within"))
    for row in rows:
        assert all(type(v) in (str, int, float, bool) for v in row.values())


# --------------------------------------------------------------------------------------------------
# Corrections


def test_holm_by_hand():
    """Holm (1979): sort p, multiply the i-th smallest by (m − i + 1), then carry the running maximum.

    p = [0.01, 0.04, 0.03, 0.005], m = 4. Sorted: 0.005, 0.01, 0.03, 0.04 × 4, 3, 2, 1
    = 0.02, 0.03, 0.06, 0.04 → running max 0.02, 0.03, 0.06, 0.06 → in input order [0.03, 0.06, 0.06, 0.02].
    """
    assert adjust_pvalues([0.01, 0.04, 0.03, 0.005], "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_benjamini_hochberg_and_bonferroni_by_hand():
    """BH (1995): i-th smallest × m / i, then running minimum from the largest.

    Sorted 0.005, 0.01, 0.03, 0.04 × 4/1, 4/2, 4/3, 4/4 = 0.02, 0.02, 0.04, 0.04 (already monotone)
    → in input order [0.02, 0.04, 0.04, 0.02]. Bonferroni: × 4 → [0.04, 0.16, 0.12, 0.02].
    """
    p = [0.01, 0.04, 0.03, 0.005]
    assert adjust_pvalues(p, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert adjust_pvalues(p, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert adjust_pvalues(p, "none") == p


@pytest.mark.parametrize("method, theirs", [("holm", "holm"), ("bonferroni", "bonferroni"), ("bh", "fdr_bh")])
def test_corrections_match_statsmodels(method, theirs):
    p = list(np.random.default_rng(9).uniform(0, 0.2, 25) ** 2) + [1.0, 0.5, 0.5]
    assert adjust_pvalues(p, method) == pytest.approx(list(multipletests(p, method=theirs)[1]), rel=1e-12)


def test_nan_p_values_pass_through_and_do_not_count():
    adjusted = adjust_pvalues([0.01, float("nan"), 0.04, None], "holm")
    assert np.isnan(adjusted[1]) and np.isnan(adjusted[3])
    assert [adjusted[0], adjusted[2]] == pytest.approx([0.02, 0.04])  # m = 2, not 4


def test_unknown_correction_raises():
    with pytest.raises(AnalysisError, match="holm"):
        adjust_pvalues([0.1], "tukey")
    with pytest.raises(AnalysisError, match="correction"):
        pairwise(likert(), design="within", correction="fdr")
    with pytest.raises(AnalysisError, match="zero_method"):
        pairwise(likert(), design="within", zero_method="zsplit_maybe")
    assert CORRECTIONS == ("holm", "bonferroni", "bh", "none")


# --------------------------------------------------------------------------------------------------
# Effect sizes


def test_rank_biserial_hand_worked():
    """Kerby (2014) simple difference r = (favourable rank sum − unfavourable rank sum) / total rank sum.

    d = [3, −1, 2, 5, −4]: ranks of |d| = 3, 1, 2, 5, 4; favourable 3 + 2 + 5 = 10, unfavourable 1 + 4 = 5,
    total 15 → r = 5 / 15 = 1/3.
    d = [0, 2, −2, 3], zeros dropped: |d| = 2, 2, 3 → ranks 1.5, 1.5, 3; (4.5 − 1.5) / 6 = 0.5.
    Pratt keeps the zero in the ranking: |d| = 0, 2, 2, 3 → ranks 1, 2.5, 2.5, 4; (6.5 − 2.5) / 10 = 0.4.
    """
    assert rank_biserial_paired([3, -1, 2, 5, -4]) == pytest.approx(1 / 3)
    assert rank_biserial_paired([0, 2, -2, 3], zero_method="wilcox") == pytest.approx(0.5)
    assert rank_biserial_paired([0, 2, -2, 3], zero_method="pratt") == pytest.approx(0.4)
    assert rank_biserial_paired([-1, -2, -3]) == -1.0
    assert np.isnan(rank_biserial_paired([0, 0]))


def brute_force_cliff(x, y):
    total = 0
    for xi in x:
        for yj in y:
            total += int(xi > yj) - int(xi < yj)
    return total / (len(x) * len(y))


def test_cliffs_delta_against_a_double_loop():
    rng = np.random.default_rng(10)
    for _ in range(20):
        x = rng.integers(1, 6, rng.integers(1, 15)).astype(float)
        y = rng.integers(1, 6, rng.integers(1, 15)).astype(float)
        assert cliffs_delta(x, y) == pytest.approx(brute_force_cliff(x, y), abs=1e-15)
    assert cliffs_delta([1, 2, 3], [1, 2, 3]) == 0.0
    assert cliffs_delta([4, 5], [1, 2]) == 1.0


def test_within_cliffs_delta_ignores_pairing():
    df = likert(seed=11)
    matrix = means_by_hand(df)
    for row in pairwise(df, design="within"):
        expected = brute_force_cliff(matrix[row["a"]].to_numpy(), matrix[row["b"]].to_numpy())
        assert row["cliffs_delta"] == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------------------------------
# Degenerate data gives notes, bad input raises


def test_one_condition_gives_a_note():
    df = likert(conditions=("A",))
    for design in ("within", "between"):
        result = omnibus(df, design=design)
        assert np.isnan(result["p"]) and np.isnan(result["statistic"]) and "nothing to compare" in result["note"]
        assert pairwise(df, design=design) == []


def test_condition_without_ratings_gives_notes_and_is_not_counted():
    df = likert(seed=12)
    df["condition"] = pd.Categorical(df["condition"], categories=["A", "B", "C", "D", "E"])
    rows = {(r["a"], r["b"]): r for r in pairwise(df, design="within")}
    empty = [r for key, r in rows.items() if "E" in key]
    assert len(empty) == 4 and all(np.isnan(r["p"]) and np.isnan(r["p_adj"]) for r in empty)
    assert all("No participant rated both" in r["note"] and not r["significant"] for r in empty)
    tested = [r for key, r in rows.items() if "E" not in key]
    expected = multipletests([r["p"] for r in tested], method="holm")[1]     # m = 6, not 10
    assert [r["p_adj"] for r in tested] == pytest.approx(list(expected))
    result = omnibus(df, design="within")
    assert "No ratings for E" in result["note"] and result["df"] == 3 and np.isfinite(result["p"])
    between_rows = pairwise(df, design="between")
    assert any("E has no rated participants" in r["note"] for r in between_rows)


def test_all_values_equal_gives_notes():
    df = likert(seed=13).assign(value=4.0)
    for design in ("within", "between"):
        result = omnibus(df, design=design)
        assert np.isnan(result["p"]) and ("same" in result["note"] or "equal" in result["note"])
        for row in pairwise(df, design=design):
            assert np.isnan(row["p"]) and row["note"] and row["significant"] is False
            assert row["cliffs_delta"] == 0.0


def test_missing_values_are_ignored_with_a_note():
    df = likert(seed=14)
    df.loc[df.index[:3], "value"] = np.nan   # both ratings of A and one of B by p00
    rows = pairwise(df, design="within")
    with_a = [r for r in rows if "A" in (r["a"], r["b"])]
    assert all("have no value" in r["note"] for r in with_a)
    matrix = means_by_hand(df.dropna(subset=["value"]))[["A", "B"]].dropna()   # p00 has no A: unpaired
    expected = stats.wilcoxon(matrix["A"], matrix["B"])
    assert with_a[0]["n"] == len(df.participant.unique()) - 1
    assert with_a[0]["p"] == pytest.approx(expected.pvalue, rel=1e-12)
    assert "have no value" in omnibus(df, design="within")["note"]


def test_too_few_participants_for_friedman_gives_a_note():
    df = likert(participants=1)
    result = omnibus(df, design="within")
    assert np.isnan(result["p"]) and "at least two" in result["note"]


@pytest.mark.parametrize("design, message", [("pairwise", "preference"), ("factorial", "within, mushra, between")])
def test_wrong_design_raises(design, message):
    with pytest.raises(AnalysisError, match=message):
        omnibus(likert(), design=design)
    with pytest.raises(AnalysisError, match=message):
        pairwise(likert(), design=design)


def test_missing_column_raises():
    with pytest.raises(AnalysisError, match="condition"):
        omnibus(likert().drop(columns="condition"), design="within")


def test_method_descriptions_cover_every_test():
    needed = {"friedman", "kruskal", "wilcoxon", "mannwhitney", "holm", "bonferroni", "bh", "none",
              "rank_biserial", "cliffs_delta", "cohens_d", "unit"}
    assert needed <= set(METHODS) and all(isinstance(v, str) and v for v in METHODS.values())
    assert METHODS["unit"] == "tests are run on each participant's mean rating per condition"
