"""Significance tests between conditions, with multiple-comparison correction and effect sizes.

The unit of analysis is the participant: every test runs on each participant's mean rating per condition
(`participant_means`), because ratings from one person are not independent.

Omnibus tests (`omnibus`)
- within / mushra: Friedman (1937) test on the participant × condition matrix of means, restricted to
  participants who rated every condition (`scipy.stats.friedmanchisquare`, chi-square approximation with
  the correction for ties). With exactly two conditions the Wilcoxon signed-rank test is reported instead.
- between: Kruskal & Wallis (1952) H test on participant means (`scipy.stats.kruskal`, tie-corrected).

Pairwise tests (`pairwise`), every unordered pair of conditions
- within / mushra: Wilcoxon (1945) signed-rank test on the paired participant means
  (`scipy.stats.wilcoxon`, two-sided, method "auto": exact null distribution when n ≤ 50 and there are no
  ties or zero differences; with ties or zeros, an exact permutation distribution when n ≤ 13, else the normal
  approximation with tie correction and no continuity correction). Zero differences: "wilcox" drops them
  (Wilcoxon 1945), "pratt" keeps them in the ranking and then leaves their ranks out of the sums (Pratt 1959).
- between: Mann & Whitney (1947) U test, two-sided (`scipy.stats.mannwhitneyu`, method "auto": exact when
  one sample has ≤ 8 values and there are no ties, else the normal approximation with tie and continuity
  corrections).

Multiple comparisons (`adjust_pvalues`): Holm (1979) step-down, Bonferroni, Benjamini & Hochberg (1995)
false discovery rate, or none; the family is all pairs with a p-value.

Effect sizes, signed so that positive means condition a is rated higher than b
- matched-pairs rank-biserial correlation by Kerby's (2014) simple difference formula: (sum of ranks of
  |d| where a > b − sum of ranks where a < b) / sum of all ranks; between designs: r = 2U/(n_a·n_b) − 1,
  which equals Cliff's delta.
- Cliff's (1993) delta: P(a > b) − P(a < b) over all (a, b) pairs of values; for within designs it is
  computed on the participant means as if the two samples were unpaired (a dominance measure).
- Cohen's (1988) d: within, d_z = mean difference / SD of differences; between, difference of means / pooled SD.
"""

import contextlib
import itertools
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from studies.analysis.errors import AnalysisError

CORRECTIONS = ("holm", "bonferroni", "bh", "none")
ZERO_METHODS = ("wilcox", "pratt")
WITHIN_DESIGNS = ("within", "mushra")
RATING_DESIGNS = ("within", "mushra", "between")

METHODS = {
    "friedman": ("Friedman (1937) test on each participant's mean rating per condition, using the participants "
                 "who rated every condition (chi-square approximation, corrected for ties)."),
    "kruskal": ("Kruskal–Wallis (1952) H test on each participant's mean rating, one group per condition "
                "(chi-square approximation, corrected for ties)."),
    "wilcoxon": ("Wilcoxon (1945) signed-rank test, two-sided, on paired participant means: exact when n ≤ 50 "
                 "without ties or zero differences, an exact permutation test when n ≤ 13 with ties or zeros, "
                 "otherwise the normal approximation with tie correction. Zero differences are dropped "
                 "(Wilcoxon's method) or kept in the ranking (Pratt 1959), as chosen."),
    "mannwhitney": ("Mann–Whitney (1947) U test, two-sided, on participant means: exact when a condition has "
                    "≤ 8 participants and there are no ties, otherwise the normal approximation with tie and "
                    "continuity corrections."),
    "holm": "Holm (1979) step-down correction of the pairwise p-values (controls the family-wise error rate).",
    "bonferroni": "Bonferroni correction: each pairwise p-value multiplied by the number of comparisons (capped at 1).",
    "bh": ("Benjamini–Hochberg (1995) step-up adjustment of the pairwise p-values "
           "(controls the false discovery rate)."),
    "none": "No correction for multiple comparisons: raw p-values are compared with alpha.",
    "rank_biserial": ("Rank-biserial correlation, positive when the first condition is rated higher: for paired "
                      "data Kerby's (2014) simple difference (rank sum of positive differences − rank sum of "
                      "negative differences) / total rank sum; for independent groups 2U/(n_a·n_b) − 1."),
    "cliffs_delta": ("Cliff's (1993) delta: P(a > b) − P(a < b) over all pairs of participant means (for "
                     "within designs the pairing is ignored, so it is a dominance measure)."),
    "cohens_d": ("Cohen's (1988) d: for within designs d_z = mean of paired differences / SD of the differences; "
                 "for between designs the difference of means / pooled SD."),
    "unit": "tests are run on each participant's mean rating per condition",
}


# ---------------------------------------------------------------------------------------------------
# Participant means


def participant_means(df, *, unit_cols=("participant",)):
    """Wide frame: one row per unit (participant), one column per condition, values the mean rating.

    A unit that did not rate a condition has NaN there; a condition whose ratings are all missing is a
    column of NaN (so the report can say it has no ratings).
    """
    unit_cols = list(unit_cols)
    frame = _rating_frame(df, unit_cols)
    conditions = _condition_labels(df)
    means = frame.groupby(unit_cols + ["condition"], sort=True, observed=True)["value"].mean()
    wide = means.unstack("condition").reindex(columns=conditions)
    wide.columns.name = "condition"
    return wide


def _rating_frame(df, unit_cols):
    if not isinstance(df, pd.DataFrame):
        raise AnalysisError("The analysis needs a pandas DataFrame with one row per rating.")
    missing = [c for c in unit_cols + ["condition", "value"] if c not in df.columns]
    if missing:
        raise AnalysisError(f"The ratings table has no column(s) {', '.join(missing)}; tests need "
                            "`participant`, `condition` and `value` (one row per rating).")
    values = pd.to_numeric(df["value"], errors="coerce")
    if values.notna().sum() != df["value"].notna().sum():
        raise AnalysisError("The `value` column holds text that is not a number; every rating must be numeric.")
    return df[unit_cols + ["condition"]].assign(value=values.astype(float))


def _condition_labels(df):
    column = df["condition"]
    if isinstance(column.dtype, pd.CategoricalDtype):
        labels = list(column.cat.categories)
    else:
        labels = list(column.dropna().unique())
    return sorted(labels, key=str)


def _check_design(design):
    if design == "pairwise":
        raise AnalysisError("The pairwise (A/B preference) design has no ratings for rank tests; "
                            "use the preference analysis (win rates, Bradley–Terry) instead.")
    if design not in RATING_DESIGNS:
        raise AnalysisError(f"Unknown design {design!r}; the rating designs are {', '.join(RATING_DESIGNS)} "
                            "(and 'pairwise' for A/B preference studies).")


def _missing_value_notes(df):
    """Per condition: a sentence when some of its ratings have no value or no participant (left out)."""
    unusable = pd.to_numeric(df["value"], errors="coerce").isna() | df["participant"].isna()
    counts = df.loc[unusable, "condition"].value_counts()
    return {c: f"{int(k)} rating(s) of {c} have no value or no participant and are left out."
            for c, k in counts.items() if k}


# ---------------------------------------------------------------------------------------------------
# Omnibus


def omnibus(df, *, design):
    """Friedman (within, mushra) or Kruskal–Wallis (between) test across all conditions.

    Returns {"test", "statistic", "df", "p", "n_participants", "note"}; missing numbers are NaN and the
    note says why. With two conditions in a within design the test is "wilcoxon".
    """
    _check_design(design)
    means = participant_means(df)
    notes = list(_missing_value_notes(df).values())
    empty = [c for c in means.columns if means[c].isna().all()]
    if empty:
        notes.append(f"No ratings for {', '.join(map(str, empty))}; left out of the test.")
        means = means.drop(columns=empty)
    means = means.dropna(how="all")
    k = means.shape[1]

    if design in WITHIN_DESIGNS:
        complete = means.dropna()
        left_out = len(means) - len(complete)
        if left_out:
            notes.append(f"{left_out} participant(s) did not rate every condition and are left out.")
        result = _result("friedman", n_participants=len(complete))
        if k < 2:
            notes.append("Fewer than two conditions have ratings: there is nothing to compare.")
        elif k == 2:
            notes.append("With two conditions the Friedman test is not used; the Wilcoxon signed-rank test "
                         "on participant means is reported instead.")
            d = complete.iloc[:, 0].to_numpy() - complete.iloc[:, 1].to_numpy()
            result["test"] = "wilcoxon"
            if not np.any(d != 0):
                notes.append("Every participant gave both conditions the same mean rating: no test is possible.")
            else:
                statistic, p = signed_rank_test(d, zero_method="wilcox")
                result.update(statistic=float(statistic), p=float(p))
        elif len(complete) < 2:
            notes.append("Fewer than two participants rated every condition: the Friedman test needs at least two.")
        else:
            with _quiet():
                statistic, p = stats.friedmanchisquare(*complete.to_numpy().T)
            if np.isfinite(statistic):
                result.update(statistic=float(statistic), df=float(k - 1), p=float(p))
            else:
                notes.append("Every participant gave all conditions the same mean rating: "
                             "the Friedman statistic is undefined.")
    else:
        groups = [means[c].dropna().to_numpy() for c in means.columns]
        result = _result("kruskal", n_participants=len(means))
        shared = int((means.notna().sum(axis=1) > 1).sum())
        if shared:
            notes.append(f"{shared} participant(s) rated more than one condition in a between design; each of "
                         "their condition means is counted as a separate observation.")
        if k < 2:
            notes.append("Fewer than two conditions have ratings: there is nothing to compare.")
        else:
            with _quiet():
                statistic, p = stats.kruskal(*groups)
            if np.isfinite(statistic):
                result.update(statistic=float(statistic), df=float(k - 1), p=float(p))
            else:
                notes.append("All participant means are equal: the Kruskal–Wallis statistic is undefined.")
    result["note"] = " ".join(notes)
    return result


def _result(test, *, n_participants):
    nan = float("nan")
    return {"test": test, "statistic": nan, "df": nan, "p": nan, "n_participants": int(n_participants), "note": ""}


# ---------------------------------------------------------------------------------------------------
# Pairwise


def pairwise(df, *, design, correction="holm", alpha=0.05, zero_method="wilcox"):
    """Every unordered pair (a < b by name) tested, corrected, with effect sizes; see the module docstring.

    Each row: {"a", "b", "test", "n", "n_a", "n_b", "statistic", "p", "p_adj", "significant", "mean_a",
    "mean_b", "direction", "rank_biserial", "cliffs_delta", "cohens_d", "note"}. Within designs: n = number
    of participants with both conditions (zero differences included), n_a / n_b = participants who rated
    a / b, statistic = scipy's Wilcoxon statistic min(T+, T−), mean_a / mean_b = mean of the paired
    participant means. Between designs: n = n_a + n_b, statistic = U of a. `direction` is the condition
    rated higher ("a" or "b", by the sign of the rank-biserial correlation) when significant, else "".
    Missing numbers are NaN and `note` says why.
    """
    _check_design(design)
    _check_option("correction", correction, CORRECTIONS)
    _check_option("zero_method", zero_method, ZERO_METHODS)
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise AnalysisError(f"alpha must be between 0 and 1, e.g. 0.05 (got {alpha!r}).")

    means = participant_means(df)
    missing_notes = _missing_value_notes(df)
    within = design in WITHIN_DESIGNS
    rows = []
    for a, b in itertools.combinations(list(means.columns), 2):
        x, y = means[a].to_numpy(), means[b].to_numpy()
        row = _paired_row(a, b, x, y, zero_method) if within else _independent_row(a, b, x, y)
        notes = [row["note"]] + [missing_notes[c] for c in (a, b) if c in missing_notes]
        row["note"] = " ".join(note for note in notes if note)
        rows.append({"a": a, "b": b, **row})

    adjusted = adjust_pvalues([r["p"] for r in rows], correction)
    for row, p_adj in zip(rows, adjusted):
        significant = bool(np.isfinite(p_adj) and p_adj < alpha)
        direction = ""
        if significant:
            lean = row["rank_biserial"] if np.isfinite(row["rank_biserial"]) else row["mean_a"] - row["mean_b"]
            direction = "a" if lean > 0 else "b" if lean < 0 else ""
        row.update(p_adj=p_adj, significant=significant, direction=direction)
    order = ["a", "b", "test", "n", "n_a", "n_b", "statistic", "p", "p_adj", "significant", "mean_a", "mean_b",
             "direction", "rank_biserial", "cliffs_delta", "cohens_d", "note"]
    return [{key: row[key] for key in order} for row in rows]


def _paired_row(a, b, x, y, zero_method):
    both = ~np.isnan(x) & ~np.isnan(y)
    xa, yb = x[both], y[both]
    d = xa - yb
    nan = float("nan")
    row = {"test": "wilcoxon", "n": int(both.sum()), "n_a": int((~np.isnan(x)).sum()),
           "n_b": int((~np.isnan(y)).sum()), "statistic": nan, "p": nan,
           "mean_a": _mean(xa), "mean_b": _mean(yb), "rank_biserial": nan, "cliffs_delta": nan,
           "cohens_d": nan, "note": ""}
    if len(d) == 0:
        row["note"] = f"No participant rated both {a} and {b}."
        return row
    row["cliffs_delta"] = cliffs_delta(xa, yb)
    if not np.any(d != 0):
        row["note"] = (f"All {len(d)} participant(s) gave {a} and {b} the same mean rating: "
                       "no difference to test.")
        return row
    statistic, p = signed_rank_test(d, zero_method=zero_method)
    zeros = int((d == 0).sum())
    notes = []
    if zeros:
        notes.append(f"{zeros} participant(s) with equal means for {a} and {b} "
                     + ("are dropped (Wilcoxon's zero method)." if zero_method == "wilcox"
                        else "are kept in the ranking (Pratt's zero method)."))
    row.update(statistic=float(statistic), p=float(p),
               rank_biserial=rank_biserial_paired(d, zero_method=zero_method), cohens_d=cohens_d_z(d))
    if not np.isfinite(row["cohens_d"]):
        notes.append("Cohen's d_z needs at least two differences that are not all identical.")
    row["note"] = " ".join(notes)
    return row


def _independent_row(a, b, x, y):
    xa, yb = x[~np.isnan(x)], y[~np.isnan(y)]
    nan = float("nan")
    row = {"test": "mannwhitney", "n": int(len(xa) + len(yb)), "n_a": int(len(xa)), "n_b": int(len(yb)),
           "statistic": nan, "p": nan, "mean_a": _mean(xa), "mean_b": _mean(yb), "rank_biserial": nan,
           "cliffs_delta": nan, "cohens_d": nan, "note": ""}
    if len(xa) == 0 or len(yb) == 0:
        empty = [c for c, values in ((a, xa), (b, yb)) if len(values) == 0]
        row["note"] = f"{' and '.join(map(str, empty))} {'has' if len(empty) == 1 else 'have'} no rated participants."
        return row
    row["cliffs_delta"] = cliffs_delta(xa, yb)
    if np.all(np.concatenate([xa, yb]) == xa[0]):
        row["note"] = f"All participant means of {a} and {b} are equal: no difference to test."
        return row
    statistic, p = rank_sum_test(xa, yb)
    row.update(statistic=float(statistic), p=float(p),
               rank_biserial=float(2 * statistic / (len(xa) * len(yb)) - 1), cohens_d=cohens_d_pooled(xa, yb))
    if not np.isfinite(row["cohens_d"]):
        row["note"] = "Cohen's d needs at least three participants in total and some spread within conditions."
    return row


def _mean(values):
    return float(np.mean(values)) if len(values) else float("nan")


def _check_option(name, value, allowed):
    if value not in allowed:
        raise AnalysisError(f"Unknown {name} {value!r}; choose one of {', '.join(allowed)}.")


@contextlib.contextmanager
def _quiet():
    """Silence scipy's warnings on degenerate input; the result's note explains instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------------------------------------------
# Tests shared with the power simulation (vectorised over leading axes)


# scipy.stats.wilcoxon(method="auto") enumerates all 2**n sign flips (an exact permutation test) when
# there are ties or zeros and n is at most this; scipy does it through its general permutation_test,
# which takes seconds per pair at n = 13, so the same enumeration is done here directly.
_PERMUTATION_MAX_N = 13


def signed_rank_test(d, *, zero_method="wilcox", axis=-1):
    """Two-sided Wilcoxon signed-rank test of paired differences `d` along `axis` → (statistic, p).

    The result is `scipy.stats.wilcoxon(d, zero_method=zero_method, method="auto")`: statistic
    min(T+, T−), p two-sided.
    """
    d = np.asarray(d, dtype=float)
    if d.ndim == 1 and 0 < d.size <= _PERMUTATION_MAX_N and not np.isnan(d).any():
        nonzero = np.abs(d[d != 0])
        if len(nonzero) < d.size or len(np.unique(nonzero)) < len(nonzero):
            return _signed_rank_permutation(d, zero_method)
    with _quiet():
        result = stats.wilcoxon(d, zero_method=zero_method, alternative="two-sided", method="auto", axis=axis)
    return result.statistic, result.pvalue


def _signed_rank_permutation(d, zero_method):
    """Exact signed-rank test by enumerating every sign flip of the non-zero differences.

    T+ (rank sum of positive differences) is compared with its null distribution as
    `scipy.stats.permutation_test` does, ties within a relative 100·eps counting as equal.
    """
    ranked = d if zero_method == "pratt" else d[d != 0]       # Pratt ranks zeros, Wilcoxon drops them
    ranks = stats.rankdata(np.abs(ranked))
    signs = np.sign(ranked)
    ranks, signs = ranks[signs != 0], signs[signs != 0]       # a zero counts towards neither sum
    t_plus, t_minus = ranks[signs > 0].sum(), ranks[signs < 0].sum()
    if len(ranks) == 0:
        return 0.0, 1.0
    flips = (np.arange(2 ** len(ranks))[:, None] >> np.arange(len(ranks))) & 1
    null = flips @ ranks
    gamma = abs(t_plus) * np.finfo(float).eps * 100
    p = 2 * min(np.mean(null >= t_plus - gamma), np.mean(null <= t_plus + gamma))
    return float(min(t_plus, t_minus)), float(min(1.0, p))


def rank_sum_test(x, y, *, axis=-1):
    """Two-sided Mann–Whitney U test of x against y along `axis` → (U of x, p)."""
    with _quiet():
        result = stats.mannwhitneyu(x, y, alternative="two-sided", method="auto", axis=axis)
    return result.statistic, result.pvalue


# ---------------------------------------------------------------------------------------------------
# Multiple comparisons


def adjust_pvalues(p, method):
    """Adjusted p-values in the input order; NaN (or None) stays NaN and does not count in m.

    "holm": Holm (1979) step-down; "bonferroni"; "bh": Benjamini & Hochberg (1995) step-up; "none".
    """
    _check_option("correction", method, CORRECTIONS)
    try:
        values = np.array([np.nan if v is None else float(v) for v in p], dtype=float)
    except (TypeError, ValueError):
        raise AnalysisError("p-values must be numbers between 0 and 1 (or missing).") from None
    valid = ~np.isnan(values)
    if np.any((values[valid] < 0) | (values[valid] > 1)):
        raise AnalysisError("p-values must lie between 0 and 1.")
    adjusted = np.full(len(values), np.nan)
    if valid.any():
        adjusted[valid] = adjust_pvalue_rows(values[valid], method)
    return [float(v) for v in adjusted]


def adjust_pvalue_rows(p, method):
    """Adjust each row (last axis) of an array of p-values without NaN; vectorised over leading axes."""
    p = np.asarray(p, dtype=float)
    m = p.shape[-1]
    if method == "none" or m == 0:
        return p.copy()
    if method == "bonferroni":
        return np.minimum(1.0, m * p)
    order = np.argsort(p, axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1)
    i = np.arange(1, m + 1)
    if method == "holm":
        ranked = np.maximum.accumulate(np.minimum(1.0, (m - i + 1) * ranked), axis=-1)
    elif method == "bh":
        ranked = np.minimum(1.0, np.minimum.accumulate((m / i * ranked)[..., ::-1], axis=-1)[..., ::-1])
    else:
        raise AnalysisError(f"Unknown correction {method!r}; choose one of {', '.join(CORRECTIONS)}.")
    adjusted = np.empty_like(p)
    np.put_along_axis(adjusted, order, ranked, axis=-1)
    return adjusted


# ---------------------------------------------------------------------------------------------------
# Effect sizes


def rank_biserial_paired(d, *, zero_method="wilcox"):
    """Kerby (2014) simple difference: (rank sum of d > 0 − rank sum of d < 0) / sum of all ranks of |d|.

    "wilcox" drops zero differences first; "pratt" ranks them (lowest ranks) and keeps their ranks in the
    denominator, so ties pull r towards 0. NaN when no differences are left.
    """
    d = np.asarray(d, dtype=float)
    d = d[~np.isnan(d)]
    if zero_method == "wilcox":
        d = d[d != 0]
    if len(d) == 0 or not np.any(d != 0):
        return float("nan")
    ranks = stats.rankdata(np.abs(d))
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())


def cliffs_delta(x, y):
    """Cliff (1993) delta = (#{x_i > y_j} − #{x_i < y_j}) / (n_x·n_y), by sorting (O(n log n))."""
    x = np.asarray(x, dtype=float)
    y = np.sort(np.asarray(y, dtype=float))
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    if len(x) == 0 or len(y) == 0:
        return float("nan")
    below = np.searchsorted(y, x, side="left").sum()          # y_j < x_i
    above = (len(y) - np.searchsorted(y, x, side="right")).sum()  # y_j > x_i
    return float((below - above) / (len(x) * len(y)))


def cohens_d_z(d):
    """Cohen (1988) d_z for paired data: mean difference / SD (ddof=1) of the differences."""
    d = np.asarray(d, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) < 2:
        return float("nan")
    sd = d.std(ddof=1)
    return float(d.mean() / sd) if sd > 0 else float("nan")


def cohens_d_pooled(x, y):
    """Cohen (1988) d for independent groups: (mean x − mean y) / pooled SD (ddof=1 within groups)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    dof = len(x) + len(y) - 2
    if len(x) == 0 or len(y) == 0 or dof < 1:
        return float("nan")
    squares = ((x - x.mean()) ** 2).sum() + ((y - y.mean()) ** 2).sum()
    pooled = np.sqrt(squares / dof)
    return float((x.mean() - y.mean()) / pooled) if pooled > 0 else float("nan")
