"""exclusions: each rule on hand-worked data at its boundary (exactly at a threshold keeps the participant),
the fixed order (a participant breaking two rules is listed once, under the first), the report, and the
frame that is kept (rated rows of kept participants, checks removed).

BS.1534 numbers follow ITU-R BS.1534-3 (10/2015), section 4.1.2 (post-screening of assessors): exclude an
assessor who rates the hidden reference below 90 for more than 15 % of the test items, or the mid-range anchor
above 90 for more than 15 % of the test items; if more than 25 % of the assessors rate the anchor above 90
for an item, that item is not held against anyone.
"""
import pandas as pd
import pytest

from studies.analysis.errors import AnalysisError
from studies.analysis.exclusions import DEFAULT_RULES, RULE_ORDER, apply_exclusions

OFF = {"max_attention_failures": None, "max_catch_failures": None, "bs1534": False}


def rated(participant, condition, value, position, **extra):
    return {"participant": participant, "condition": condition, "value": value, "trial_position": position,
            "question": "naturalness", "question_type": "likert", "scale_min": 1, "scale_max": 5, **extra}


def likert_block(participant, values, start=1, **extra):
    conditions = ["A", "B", "C", "D", "E"]
    return [rated(participant, conditions[i % 5], v, start + i, **extra) for i, v in enumerate(values)]


def excluded(report):
    return {e["participant"]: e["rule"] for e in report["excluded"]}


# --- BS.1534-3 -----------------------------------------------------------------------------------------------


def mushra_panel():
    """4 assessors x 10 items; each item has a hidden reference, an anchor and one system under test.

    Hidden reference (below 90 marked *):
      a1: items 1, 2 at 85*, 70*  -> 2 of 10 = 20 % > 15 %  -> excluded (bs1534_reference)
      a2: item 3 at 80*           -> 1 of 10 = 10 %         -> kept
      a3, a4: 100 everywhere
    Anchor (above 90 marked *; every other anchor rating is 30):
      item 10: a3 95*, a4 92*     -> 2 of 4 assessors = 50 % > 25 %: item 10 counts against no one
      items 7, 9: a3 91*, 99*     -> 1 of 4 = 25 %, not more than 25 %: these count
      item 8: a4 93*              -> counts
      a3: 2 counted of 10 = 20 % > 15 % -> excluded (bs1534_anchor)
      a4: 1 counted of 10 = 10 % -> kept (2 of 10 = 20 % had item 10 counted)
      a1 rates the anchor at 30 everywhere; excluded already, listed once.
    """
    reference = {("a1", 1): 85, ("a1", 2): 70, ("a2", 3): 80}
    anchor = {("a3", 10): 95, ("a4", 10): 92, ("a3", 7): 91, ("a3", 9): 99, ("a4", 8): 93}
    rows = []
    for p in ("a1", "a2", "a3", "a4"):
        for i in range(1, 11):
            common = {"participant": p, "item": f"trial{i}", "question": "mushra", "trial_position": i}
            rows.append({**common, "condition": "reference", "role": "hidden_reference",
                         "value": reference.get((p, i), 100)})
            rows.append({**common, "condition": "anchor70", "role": "anchor", "value": anchor.get((p, i), 30)})
            rows.append({**common, "condition": "system", "role": "test", "value": 60})
    return pd.DataFrame(rows)


def test_bs1534_hand_worked_panel():
    kept, report = apply_exclusions(mushra_panel(), design="mushra")
    assert report["excluded"] == [
        {"participant": "a1", "rule": "bs1534_reference",
         "reason": "rated the hidden reference below 90 in 2 of 10 items (20%, more than 15%)"},
        {"participant": "a3", "rule": "bs1534_anchor",
         "reason": "rated the anchor above 90 in 2 of 10 items (20%, more than 15%); 1 more item not counted "
                   "(more than 25% of assessors did the same)"},
    ]
    assert sorted(kept["participant"].unique()) == ["a2", "a4"]
    assert len(kept) == 2 * 10 * 3  # hidden reference and anchor rows stay: they are rated rows
    anchor_rule = report["rules"][RULE_ORDER.index("bs1534_anchor")]
    assert anchor_rule["applied"] and "1 item had the anchor above 90 from more than 25% of assessors" in \
        anchor_rule["description"]


@pytest.mark.parametrize("below, kept_", [(3, True), (4, False)])
def test_bs1534_reference_boundary_is_fifteen_percent(below, kept_):
    # 20 items: 3 below 90 = 15 % exactly (kept); 4 = 20 % (excluded).
    rows = [{"participant": "x", "condition": "ref", "role": "hidden_reference", "item": f"i{i}",
             "value": 89.9 if i < below else 90.0} for i in range(20)]
    rows += [{"participant": "x", "condition": "sys", "role": "test", "item": f"i{i}", "value": 50}
             for i in range(20)]
    _, report = apply_exclusions(pd.DataFrame(rows), design="mushra")
    assert (report["excluded"] == []) is kept_


def test_bs1534_only_for_mushra_design_and_can_be_switched_off():
    _, report = apply_exclusions(mushra_panel(), design="within")
    assert report["excluded"] == []
    rules = {r["rule"]: r for r in report["rules"]}
    assert not rules["bs1534_reference"]["applied"] and "only for the mushra design" in \
        rules["bs1534_reference"]["description"]
    _, report = apply_exclusions(mushra_panel(), design="mushra", rules={"bs1534": False})
    assert report["excluded"] == [] and not report["rules"][-1]["applied"]


def test_bs1534_item_is_utterance_and_embodiment_when_given():
    # Platform MUSHRA pages: the `item` column is the question item ("overall"); the stimulus material is
    # the utterance and embodiment. 2 assessors x 4 utterances; b1 has the reference below 90 on 1 of 4.
    rows = []
    for p in ("b1", "b2"):
        for u in range(4):
            v = 50 if (p == "b1" and u == 0) else 100
            rows.append({"participant": p, "condition": "gt", "role": "hidden_reference", "item": "overall",
                         "utterance": f"utt{u}", "embodiment": "avatar", "value": v})
    _, report = apply_exclusions(pd.DataFrame(rows), design="mushra")
    assert report["excluded"] == [{"participant": "b1", "rule": "bs1534_reference",
                                   "reason": "rated the hidden reference below 90 in 1 of 4 items (25%, more "
                                             "than 15%)"}]


# --- attention checks and catch trials --------------------------------------------------------------------


def attention_rows(participant, answers, expected=4, start=100):
    return [rated(participant, "attention_check", a, start + i, trial_kind="attention", expected=expected)
            for i, a in enumerate(answers)]


@pytest.mark.parametrize("allowed, wrong, kept_", [(0, 0, True), (0, 1, False), (1, 1, True), (1, 2, False)])
def test_attention_boundary(allowed, wrong, kept_):
    answers = [2] * wrong + [4] * (3 - wrong)
    df = pd.DataFrame(likert_block("p", [1, 2, 3, 4, 5]) + attention_rows("p", answers))
    _, report = apply_exclusions(df, design="within", rules={"max_attention_failures": allowed})
    assert (report["excluded"] == []) is kept_
    if not kept_:
        assert report["excluded"][0]["reason"].startswith(f"answered {wrong} of 3 attention checks wrong "
                                                          "(trial 100: expected 4, answered 2")


def test_attention_trial_with_two_wrong_items_is_one_failure():
    rows = attention_rows("p", [2]) + [dict(attention_rows("p", [1])[0], item="second")]
    df = pd.DataFrame(likert_block("p", [1, 2, 3]) + rows)
    _, report = apply_exclusions(df, design="within", rules={"max_attention_failures": 1})
    assert report["excluded"] == []  # one trial (position 100) failed, one allowed


def test_attention_checks_without_expected_answer_are_not_judged():
    df = pd.DataFrame(likert_block("p", [1, 2, 3]) + attention_rows("p", [63], expected=None))
    _, report = apply_exclusions(df, design="within")
    rule = report["rules"][0]
    assert report["excluded"] == [] and not rule["applied"]
    assert "1 attention-check row without an expected answer were not judged" in rule["description"]


@pytest.mark.parametrize("value, kept_", [(3, True), (3.5, False), (5, False)])
def test_catch_rating_fails_above_the_scale_midpoint(value, kept_):
    # 1..5 scale: midpoint (1 + 5) / 2 = 3; exactly 3 keeps the participant.
    df = pd.DataFrame(likert_block("p", [4, 4, 2]) + [rated("p", "lipsync_catch", value, 9, check="catch")])
    kept, report = apply_exclusions(df, design="within")
    assert (report["excluded"] == []) is kept_
    assert "lipsync_catch" not in set(kept["condition"])  # catch rows never reach the analysis


def test_catch_midpoint_of_a_slider():
    df = pd.DataFrame([{"participant": "p", "condition": "catch", "value": 50.5, "check": "catch",
                        "question_type": "slider"},
                       {"participant": "q", "condition": "catch", "value": 50, "check": "catch",
                        "question_type": "slider"}])
    _, report = apply_exclusions(df, design="within")
    assert excluded(report) == {"p": "catch_trial"}
    assert report["excluded"][0]["reason"] == ("rated the mismatched video above the scale midpoint in 1 of 1 "
                                               "catch trials; 0 allowed")


def test_pairwise_catch_side_is_the_condition_seen_only_in_catch_pairs():
    pair = {"question_type": "pairwise", "question": "pref"}
    rows = [
        # ordinary pairs: gt and sys appear here, so neither can be the catch
        {"participant": "p", "pair_a": "gt", "pair_b": "sys", "choice": "A", **pair},
        {"participant": "q", "pair_a": "sys", "pair_b": "gt", "choice": "B", **pair},
        # catch pairs: "shifted" appears only here -> the catch side
        {"participant": "p", "pair_a": "shifted", "pair_b": "gt", "choice": "A", "check": "catch", **pair},
        {"participant": "q", "pair_a": "gt", "pair_b": "shifted", "choice": "A", "check": "catch", **pair},
        {"participant": "r", "pair_a": "gt", "pair_b": "shifted", "choice": "tie", "check": "catch", **pair},
    ]
    kept, report = apply_exclusions(pd.DataFrame(rows), design="pairwise")
    assert excluded(report) == {"p": "catch_trial"}
    assert report["excluded"][0]["reason"] == "preferred the mismatched video in 1 of 1 catch trials; 0 allowed"
    assert kept[["participant", "choice"]].values.tolist() == [["q", "B"]]


# --- watching, speed, straight-lining ------------------------------------------------------------------------


@pytest.mark.parametrize("least, kept_", [(0.9, True), (0.89, False)])
def test_min_watch_boundary(least, kept_):
    df = pd.DataFrame(likert_block("p", [1, 2, 3], watched_fraction=1.0)
                      + [rated("p", "A", 3, 9, watched_fraction=least)])
    _, report = apply_exclusions(df, design="within", rules={"min_watch_fraction": 0.9})
    assert (report["excluded"] == []) is kept_
    if not kept_:
        assert report["excluded"][0]["reason"] == ("1 rated trial with a video watched less than 90% "
                                                   "(least watched: 89%)")


@pytest.mark.parametrize("times, kept_", [([800, 1000, 1200], True), ([800, 999, 1500], False)])
def test_speed_boundary_is_the_median(times, kept_):
    # medians: 1000 (exactly the threshold: kept) and 999 (below: excluded)
    rows = [rated("p", "A", 3, i, answer_ms=t) for i, t in enumerate(times)]
    rows.append(rated("p", "A", 3, 50, answer_ms=10, trial_kind="training"))  # training times do not count
    _, report = apply_exclusions(pd.DataFrame(rows), design="within", rules={"min_median_answer_ms": 1000})
    assert (report["excluded"] == []) is kept_
    if not kept_:
        assert report["excluded"][0]["reason"] == "median answer time 999 ms is below 1000 ms"


@pytest.mark.parametrize("values, kept_", [
    ([4] * 8 + [2, 3], True),    # 8 of 10 = 80 %: exactly the threshold
    ([4] * 9 + [2], False),      # 9 of 10 = 90 %
    ([4, 4, 4, 4], True),        # fewer than 5 likert ratings: not judged
    ([5] * 5, False),            # 5 of 5
])
def test_straight_lining_boundary(values, kept_):
    _, report = apply_exclusions(pd.DataFrame(likert_block("p", values)), design="within",
                                 rules={"max_identical_fraction": 0.8})
    assert (report["excluded"] == []) is kept_


def test_straight_lining_reason_and_sliders_do_not_count():
    rows = likert_block("p", [4] * 9 + [2])
    rows += [dict(r, question_type="slider", value=50, trial_position=r["trial_position"] + 20,
                  scale_min=0, scale_max=100) for r in likert_block("q", [1] * 10)]
    _, report = apply_exclusions(pd.DataFrame(rows), design="within", rules={"max_identical_fraction": 0.8})
    assert report["excluded"] == [{"participant": "p", "rule": "straight_lining",
                                   "reason": "90% of 10 likert ratings (9) were the same value (4); at most 80% "
                                             "allowed"}]


# --- order, report, kept frame --------------------------------------------------------------------------------


def study():
    """p1 fails an attention check AND speeds; p2 only speeds; p3 straight-lines; p4 is fine.
    Each has 5 rated likert rows, 1 training row and 1 attention check."""
    rows = []
    for p, values, ms, answer in (("p1", [1, 2, 3, 4, 5], 300, 1), ("p2", [1, 2, 3, 4, 5], 400, 4),
                                  ("p3", [3, 3, 3, 3, 3], 2000, 4), ("p4", [2, 3, 4, 5, 5], 2500, 4)):
        rows += likert_block(p, values, answer_ms=ms, watched_fraction=1.0)
        rows.append(rated(p, "A", 5, 0, trial_kind="training", answer_ms=ms))
        rows += attention_rows(p, [answer])
    return pd.DataFrame(rows)


RULES = {"min_median_answer_ms": 1000, "max_identical_fraction": 0.9, "min_watch_fraction": 0.95}


def test_fixed_order_lists_each_participant_once_under_the_first_rule():
    _, report = apply_exclusions(study(), design="within", rules=RULES)
    assert [(e["participant"], e["rule"]) for e in report["excluded"]] == [
        ("p1", "attention_check"), ("p2", "speed"), ("p3", "straight_lining")]
    # Reversing the order of the data does not change the result.
    _, again = apply_exclusions(study().iloc[::-1], design="within", rules=RULES)
    assert again["excluded"] == report["excluded"]


def test_report_contents():
    _, report = apply_exclusions(study(), design="within", rules=RULES)
    assert set(report) == {"rules", "excluded", "n_participants_before", "n_participants_after",
                           "n_ratings_before", "n_ratings_after"}
    assert [r["rule"] for r in report["rules"]] == RULE_ORDER
    assert [r["order"] for r in report["rules"]] == [1, 2, 3, 4, 5, 6, 7]
    applied = {r["rule"]: r["applied"] for r in report["rules"]}
    # no catch rows; BS.1534 is for the mushra design only
    assert applied == {"attention_check": True, "catch_trial": False, "min_watch": True, "speed": True,
                       "straight_lining": True, "bs1534_reference": False, "bs1534_anchor": False}
    descriptions = {r["rule"]: r["description"] for r in report["rules"]}
    assert "below 1000 ms" in descriptions["speed"] and "more than 90%" in descriptions["straight_lining"]
    assert "less than 95%" in descriptions["min_watch"] and "more than 0 wrong answers" in \
        descriptions["attention_check"]
    assert "no catch-trial rows" in descriptions["catch_trial"]
    assert (report["n_participants_before"], report["n_participants_after"]) == (4, 1)
    assert (report["n_ratings_before"], report["n_ratings_after"]) == (20, 5)
    for entry in report["excluded"]:
        assert set(entry) == {"participant", "rule", "reason"} and all(isinstance(v, str) for v in entry.values())


def test_kept_frame_is_rated_rows_of_kept_participants_only():
    kept, _ = apply_exclusions(study(), design="within", rules=RULES)
    assert kept["participant"].unique().tolist() == ["p4"]
    assert kept["trial_kind"].eq("rated").all() and kept["check"].eq("").all()
    assert kept["value"].tolist() == [2, 3, 4, 5, 5]


def test_defaults_and_rules_that_are_off():
    assert DEFAULT_RULES == {"max_attention_failures": 0, "max_catch_failures": 0, "min_watch_fraction": None,
                             "min_median_answer_ms": None, "max_identical_fraction": None, "bs1534": True}
    kept, report = apply_exclusions(study(), design="within")  # defaults: only the attention check is on
    assert excluded(report) == {"p1": "attention_check"}
    kept, report = apply_exclusions(study(), design="within", rules=OFF)
    assert report["excluded"] == [] and not any(r["applied"] for r in report["rules"])
    assert len(kept) == 20


def test_bad_rules_are_refused():
    with pytest.raises(AnalysisError, match="unknown exclusion setting\\(s\\) min_watch"):
        apply_exclusions(study(), design="within", rules={"min_watch": 0.9})
    with pytest.raises(AnalysisError, match="min_watch_fraction = 1.5 must be a number from 0 to 1"):
        apply_exclusions(study(), design="within", rules={"min_watch_fraction": 1.5})
    with pytest.raises(AnalysisError, match="max_attention_failures = 0.5 must be a whole number"):
        apply_exclusions(study(), design="within", rules={"max_attention_failures": 0.5})
    with pytest.raises(AnalysisError, match="unknown design"):
        apply_exclusions(study(), design="anova")


def test_an_attention_check_with_several_items_is_named_once_in_the_reason():
    base = attention_rows("p", [2])[0]
    rows = [dict(base, item=item) for item in ("upper", "middle", "lower")]
    df = pd.DataFrame(likert_block("p", [1, 2, 3]) + rows)
    _, report = apply_exclusions(df, design="within", rules={"max_attention_failures": 0})
    reason = report["excluded"][0]["reason"]
    assert reason.count("trial 100: expected 4, answered 2") == 1, reason
