"""The whole analysis (studies/analysis/run.py) on small data sets made here: the numbers it reports equal
scipy's on the same participant means, exclusions reach every block, and bad or degenerate input gives a
clear error or a message in the summary, never a crash."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from studies.analysis.errors import AnalysisError
from studies.analysis.run import SCHEMA, run_analysis

FAST = {"n_boot": 200, "bt_boot": 200, "figures": False}


def ratings(n_participants=12, conditions=("gt", "model", "still"), shift=(0.0, -0.6, -1.5), per_cell=3, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_participants):
        level = rng.normal(0, 0.5)
        for c, delta in zip(conditions, shift):
            for u in range(per_cell):
                value = float(np.clip(np.round(4 + level + delta + rng.normal(0, 1)), 1, 7))
                rows.append({"participant": f"p{p:02d}", "condition": c, "utterance": f"u{u}",
                             "stimulus": f"{c}-{u}", "value": value, "question": "naturalness",
                             "question_type": "likert", "scale_min": 1, "scale_max": 7, "answer_ms": 3000})
    return pd.DataFrame(rows)


def test_a_within_study_reports_scipys_friedman_and_wilcoxon_on_participant_means():
    df = ratings()
    summary = run_analysis(df, design="within", settings=FAST)
    assert summary["schema"] == SCHEMA
    json.dumps(summary, allow_nan=False)  # every number JSON-safe
    (block,) = summary["blocks"]
    means = df.groupby(["participant", "condition"])["value"].mean().unstack()
    expected = stats.friedmanchisquare(*(means[c].to_numpy() for c in sorted(means.columns)))
    assert block["omnibus"]["test"] == "friedman"
    assert block["omnibus"]["statistic"] == pytest.approx(expected.statistic)
    assert block["omnibus"]["p"] == pytest.approx(expected.pvalue)
    pair = next(r for r in block["pairwise"] if (r["a"], r["b"]) == ("gt", "still"))
    w = stats.wilcoxon(means["gt"], means["still"], zero_method="wilcox")
    assert pair["p"] == pytest.approx(w.pvalue)
    # Holm over the three pairs, by hand
    ps = sorted(r["p"] for r in block["pairwise"])
    holm = np.maximum.accumulate([min(1.0, p * (3 - i)) for i, p in enumerate(ps)])
    assert sorted(r["p_adj"] for r in block["pairwise"]) == pytest.approx(list(holm))
    assert block["conditions"][0] == "gt" and block["conditions"][-1] == "still"  # by mean, highest first
    gt = next(r for r in block["summary"] if r["condition"] == "gt")
    assert gt["mean"] == pytest.approx(df.loc[df.condition == "gt", "value"].mean())
    assert gt["n_participants"] == 12 and gt["n_ratings"] == 36
    assert block["mixed_model"]["fixed"] and block["reliability"]["interval"] is not None


def test_an_excluded_participant_leaves_every_block_and_is_listed_once_under_the_first_rule():
    df = ratings()
    check = {"participant": "p00", "condition": "gt", "value": 2.0, "question": "naturalness",
             "question_type": "likert", "trial_kind": "attention", "check": "attention", "expected": 5.0,
             "scale_min": 1, "scale_max": 7, "answer_ms": 100}
    pair_rows = pd.DataFrame([{"participant": f"p{p:02d}", "pair_a": "gt", "pair_b": "still", "choice": "A",
                               "question": "preference", "question_type": "pairwise", "answer_ms": 100}
                              for p in range(12)])
    df = pd.concat([df, pd.DataFrame([check]), pair_rows], ignore_index=True)
    summary = run_analysis(df, design={"naturalness": "within", "preference": "pairwise"},
                           settings={**FAST, "rules": {"min_median_answer_ms": 500}})
    excluded = summary["exclusions"]["excluded"]
    # p00 failed the attention check and is also fast on the pairwise page: listed once, under the first rule
    assert [(e["participant"], e["rule"]) for e in excluded if e["participant"] == "p00"] == [("p00", "attention_check")]
    assert {e["participant"] for e in excluded} == {f"p{p:02d}" for p in range(12)}  # all fast on pairs
    assert summary["blocks"] == [] and summary["preference"] == []
    assert any("No ratings are left" in m["text"] for m in summary["messages"])


def test_mixed_designs_give_rating_blocks_and_a_preference_section():
    df = ratings()
    rng = np.random.default_rng(3)
    pairs = [{"participant": f"p{p:02d}", "pair_a": "gt", "pair_b": "random_alignment",
              "choice": "A" if rng.random() < 0.8 else "B", "question": "preference", "question_type": "pairwise"}
             for p in range(12) for _ in range(5)]
    df = pd.concat([df, pd.DataFrame(pairs)], ignore_index=True)
    summary = run_analysis(df, design={"naturalness": "within", "preference": "pairwise"},
                           settings={**FAST, "matched": "gt"})
    assert len(summary["blocks"]) == 1
    (pref,) = summary["preference"]
    wins = sum(r["choice"] == "A" for r in pairs)
    mvm = pref["matched_vs_mismatched"]
    assert mvm["n"] == 60 and mvm["matched_wins"] == wins
    assert mvm["p"] == pytest.approx(stats.binomtest(wins, 60, 0.5).pvalue)
    assert {r["condition"] for r in pref["bradley_terry"]} == {"gt", "random_alignment"}


def test_between_participants_is_detected_when_each_rated_one_condition():
    df = ratings(n_participants=15)
    cond_of = {f"p{p:02d}": ("gt", "model", "still")[p % 3] for p in range(15)}
    df = df[df["condition"] == df["participant"].map(cond_of)]
    summary = run_analysis(df, design="within", settings=FAST)
    (block,) = summary["blocks"]
    assert block["design"] == "between" and block["omnibus"]["test"] == "kruskal"
    means = df.groupby("participant").agg(value=("value", "mean"), condition=("condition", "first"))
    expected = stats.kruskal(*(means.loc[means.condition == c, "value"] for c in sorted(set(cond_of.values()))))
    assert block["omnibus"]["p"] == pytest.approx(expected.pvalue)
    assert any("between participants" in n for n in block["notes"])


def test_degenerate_data_give_messages_not_crashes():
    empty = run_analysis(pd.DataFrame(columns=["participant", "condition", "value"]), design="within", settings=FAST)
    assert empty["messages"][0]["level"] == "error" and empty["blocks"] == []
    one = ratings(conditions=("gt",), shift=(0.0,))
    summary = run_analysis(one, design="within", settings=FAST)
    assert summary["blocks"][0]["pairwise"] == [] and summary["blocks"][0]["omnibus"] is None
    assert any("only one condition" in m["text"] for m in summary["messages"])
    holed = ratings()
    holed.loc[holed.index[:5], "value"] = np.nan
    summary = run_analysis(holed, design="within", settings=FAST)
    assert sum(d["rows"] for d in summary["input"]["dropped"]) == 5
    json.dumps(summary, allow_nan=False)


def test_a_condition_left_without_ratings_after_exclusions_is_named():
    df = ratings()
    df.loc[df.condition == "model", "participant"] = "p00"  # all of "model" from one participant …
    check = {"participant": "p00", "condition": "gt", "value": 2.0, "question": "naturalness",
             "question_type": "likert", "trial_kind": "attention", "check": "attention", "expected": 5.0}
    summary = run_analysis(pd.concat([df, pd.DataFrame([check])], ignore_index=True), design="within",
                           settings=FAST)  # … who fails the attention check
    assert "model" not in summary["blocks"][0]["conditions"]
    assert any("no ratings left for model" in m["text"] for m in summary["messages"])


@pytest.mark.parametrize("bad, message", [
    (dict(design="latin"), "unknown design"),
    (dict(design="within", settings={"correction": "sidak"}), "unknown correction"),
    (dict(design="within", settings={"n_boot": 5}), "at least 100"),
    (dict(design="within", settings={"colour": "red"}), "unknown analysis setting"),
])
def test_bad_settings_are_refused_with_the_reason(bad, message):
    with pytest.raises(AnalysisError, match=message):
        run_analysis(ratings(), **bad)


def test_missing_columns_are_refused_with_the_columns_named():
    with pytest.raises(AnalysisError, match="value"):
        run_analysis(pd.DataFrame({"participant": ["a"], "condition": ["x"]}), design="within", settings=FAST)


def test_figures_are_written_with_paths_relative_to_the_report(tmp_path):
    summary = run_analysis(ratings(), design="within", settings={**FAST, "figures": True}, out_dir=tmp_path)
    figures = summary["blocks"][0]["figures"]
    assert set(figures) == {"significance_matrix", "box_violin", "likert_stacked"}
    for png, svg in figures.values():
        assert not png.startswith("/") and (tmp_path / png).is_file() and (tmp_path / svg).is_file()
