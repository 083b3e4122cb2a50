"""descriptive.summarize: counts and moments against pandas/numpy, the t interval against scipy.stats.t,
the participant bootstrap against a direct implementation of its definition, interval coverage, speed."""

import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from studies.analysis.descriptive import BOOT_METHOD, T_METHOD, summarize
from studies.analysis.errors import AnalysisError


def ratings(seed=1, participants=40, conditions=("A", "B", "C"), items=4, missing_share=0.3):
    """Hierarchical ratings; some participants skip some trials, so counts differ between participants."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(participants):
        bias = rng.normal(0, 8)
        for c, condition in enumerate(conditions):
            for item in range(items):
                for repeat in range(2):
                    if rng.random() < missing_share:
                        continue
                    value = float(np.clip(round(50 + 5 * c + bias + rng.normal(0, 15)), 0, 100))
                    rows.append({"participant": f"p{p:03d}", "condition": condition, "item": f"i{item}",
                                 "value": value})
    return pd.DataFrame(rows)


def test_counts_and_moments_match_pandas():
    df = ratings()
    out = summarize(df, by=["condition", "item"], n_boot=200)
    assert list(out.columns) == ["condition", "item", "n_ratings", "n_participants", "mean", "median", "sd",
                                 "ci_boot_low", "ci_boot_high", "ci_t_low", "ci_t_high"]
    for (condition, item), group in df.groupby(["condition", "item"]):
        row = out[(out.condition == condition) & (out["item"] == item)].iloc[0]
        values = group["value"].to_numpy()
        assert row.n_ratings == len(values)
        assert row.n_participants == group["participant"].nunique()
        assert row["mean"] == pytest.approx(np.mean(values), rel=1e-12)
        assert row["median"] == pytest.approx(np.median(values), rel=1e-12)
        assert row["sd"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    assert len(out) == df.groupby(["condition", "item"]).ngroups
    assert list(out.condition) == sorted(out.condition)


def test_t_interval_is_on_participant_means_with_n_minus_1_df():
    df = ratings(seed=2)
    out = summarize(df, by=["condition"], n_boot=200, level=0.9).set_index("condition")
    for condition, group in df.groupby("condition"):
        participant_means = group.groupby("participant")["value"].mean().to_numpy()
        n = len(participant_means)
        centre = participant_means.mean()
        half = stats.t.ppf(0.95, n - 1) * participant_means.std(ddof=1) / np.sqrt(n)
        assert out.loc[condition, "ci_t_low"] == pytest.approx(centre - half, rel=1e-10)
        assert out.loc[condition, "ci_t_high"] == pytest.approx(centre + half, rel=1e-10)
        low, high = stats.t.interval(0.9, n - 1, loc=centre, scale=stats.sem(participant_means))
        assert (out.loc[condition, "ci_t_low"], out.loc[condition, "ci_t_high"]) == pytest.approx((low, high))


@pytest.mark.parametrize("missing_share", [0.0, 0.3])   # equal and unequal numbers of ratings per participant
def test_bootstrap_follows_its_definition(missing_share):
    """Percentile interval of sums[idx].sum(1) / counts[idx].sum(1), idx from default_rng(seed) per group."""
    df = ratings(seed=3, missing_share=missing_share)
    n_boot, seed = 3000, 11
    out = summarize(df, by=["condition"], n_boot=n_boot, seed=seed, level=0.95).set_index("condition")
    for condition, group in df.groupby("condition"):
        per = group.groupby("participant")["value"].agg(["sum", "count"]).sort_index()
        sums, counts = per["sum"].to_numpy(), per["count"].to_numpy()
        idx = np.random.default_rng(seed).integers(0, len(per), size=(n_boot, len(per)))
        boot = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
        low, high = np.percentile(boot, [2.5, 97.5])
        assert out.loc[condition, "ci_boot_low"] == pytest.approx(low, rel=1e-12)
        assert out.loc[condition, "ci_boot_high"] == pytest.approx(high, rel=1e-12)


def test_bootstrap_is_deterministic_under_the_seed():
    df = ratings(seed=4)
    first = summarize(df, by=["condition"], n_boot=2000, seed=7)
    again = summarize(df.sample(frac=1, random_state=0), by=["condition"], n_boot=2000, seed=7)
    other = summarize(df, by=["condition"], n_boot=2000, seed=8)
    pd.testing.assert_frame_equal(first, again)
    assert not np.allclose(first["ci_boot_low"], other["ci_boot_low"])
    # a group's interval depends on its own data only
    alone = summarize(df[df.condition == "B"], by=["condition"], n_boot=2000, seed=7)
    assert alone["ci_boot_low"].iloc[0] == first.set_index("condition").loc["B", "ci_boot_low"]


def test_interval_coverage_on_simulated_data():
    """95 % intervals cover the true mean in about 95 % of 200 simulated studies (30 participants each).

    The studies are summarised in one call, one group per study; groups of equal size share their
    bootstrap draws, which leaves each study's interval valid because its participants are i.i.d.
    """
    rng = np.random.default_rng(2024)
    true_mean, studies, participants, per_participant = 3.0, 200, 30, 6
    shape = (studies, participants, per_participant)
    values = true_mean + rng.normal(0, 1.0, shape[:2])[:, :, None] + rng.normal(0, 1.5, shape)
    df = pd.DataFrame({
        "study": np.repeat(np.arange(studies), participants * per_participant),
        "participant": np.tile(np.repeat([f"p{i}" for i in range(participants)], per_participant), studies),
        "value": values.ravel(),
    })
    out = summarize(df, by=["study"], n_boot=1000, seed=3)
    assert len(out) == studies and (out.n_participants == participants).all()
    boot = ((out.ci_boot_low <= true_mean) & (true_mean <= out.ci_boot_high)).mean()
    t = ((out.ci_t_low <= true_mean) & (true_mean <= out.ci_t_high)).mean()
    assert 0.88 <= boot <= 0.99
    assert 0.88 <= t <= 0.99


def test_wider_level_gives_wider_intervals():
    df = ratings(seed=5)
    narrow = summarize(df, by=["condition"], n_boot=2000, level=0.8)
    wide = summarize(df, by=["condition"], n_boot=2000, level=0.99)
    assert np.all(wide.ci_boot_high - wide.ci_boot_low > narrow.ci_boot_high - narrow.ci_boot_low)
    assert np.all(wide.ci_t_high - wide.ci_t_low > narrow.ci_t_high - narrow.ci_t_low)


def test_one_participant_group_gets_no_interval_and_empty_by_pools_everything():
    df = pd.DataFrame({"participant": ["p1", "p1", "p2", "p3"], "condition": ["A", "A", "B", "B"],
                       "value": [1.0, 3.0, 4.0, 6.0]})
    out = summarize(df, by=["condition"], n_boot=100).set_index("condition")
    assert out.loc["A", "mean"] == 2.0 and out.loc["A", "n_participants"] == 1
    assert out.loc["A", ["ci_boot_low", "ci_boot_high", "ci_t_low", "ci_t_high"]].isna().all()
    assert out.loc["B", ["ci_boot_low", "ci_boot_high", "ci_t_low", "ci_t_high"]].notna().all()
    pooled = summarize(df, by=[], n_boot=100)
    assert len(pooled) == 1 and pooled["n_ratings"].iloc[0] == 4 and pooled["mean"].iloc[0] == 3.5


def test_missing_values_are_left_out_and_reported():
    df = pd.DataFrame({"participant": ["p1", "p2", "p3", "p3"], "condition": "A",
                       "value": [1.0, np.nan, 3.0, 5.0]})
    out = summarize(df, by=["condition"], n_boot=100)
    assert out["n_ratings"].iloc[0] == 3 and out["mean"].iloc[0] == 3.0
    assert out.attrs["dropped"] == [{"reason": "rating value missing", "rows": 1}]


@pytest.mark.parametrize("kwargs, message", [
    ({"by": ["stimulus"]}, "stimulus"),
    ({"by": ["condition"], "n_boot": 0}, "n_boot"),
    ({"by": ["condition"], "level": 95}, "level"),
])
def test_bad_input_raises_analysis_error(kwargs, message):
    df = ratings(seed=6, participants=3)
    with pytest.raises(AnalysisError, match=message):
        summarize(df, **kwargs)


def test_text_values_raise_analysis_error():
    df = pd.DataFrame({"participant": ["p1", "p2"], "condition": "A", "value": ["good", "3"]})
    with pytest.raises(AnalysisError, match="numeric"):
        summarize(df, by=["condition"])


def test_method_descriptions_are_sentences():
    assert "bootstrap" in BOOT_METHOD and "participants" in BOOT_METHOD
    assert "t" in T_METHOD and "participant" in T_METHOD


def test_benchmark_size_is_fast():
    """100,000 ratings, 10 conditions, 500 participants, 10,000 rounds: well under 2 s (budget 4 s here)."""
    rng = np.random.default_rng(0)
    n = 100_000
    df = pd.DataFrame({"participant": np.char.add("p", rng.integers(0, 500, n).astype(str)),
                       "condition": np.char.add("c", rng.integers(0, 10, n).astype(str)),
                       "value": rng.normal(50, 20, n)})
    start = time.perf_counter()
    out = summarize(df, by=["condition"], n_boot=10_000, seed=0)
    elapsed = time.perf_counter() - start
    assert len(out) == 10 and out["ci_boot_low"].notna().all()
    assert elapsed < 4.0, f"summarize took {elapsed:.2f} s"
