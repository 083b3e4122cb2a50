"""Balanced assignment: properties of the Latin square, checked by counting over the produced plans."""
import math
from collections import Counter

from studies.design import cell_count, check_balance, plan_trials
from studies.spec import parse_spec

SPEC = """\
slug: balance
title: Balance
stimuli:
  corpus: c
  conditions: [gt, rnd, still]
  embodiments: [avatar, robot_sim]
questions:
  nat: {type: likert, prompt: "Natural?"}
  pair: {type: pairwise, prompt: "Which?", allow_tie: true}
  mush: {type: slider, prompt: Rate, hidden_reference: gt, anchor: still}
pages:
  - {type: trials, question: nat, attention_checks: 2}
  - {type: trials, question: pair, attention_checks: 0}
  - {type: trials, question: mush, attention_checks: 0}
  - {type: completion}
"""
UTTS = [f"u{i:02d}" for i in range(30)]  # 6 treatments and 15 pairs both divide 30


def plans():
    spec = parse_spec(SPEC)
    n = cell_count(spec)
    out = []
    for cell in range(n):
        out.append(plan_trials(spec, utterances=UTTS, training_utterances=[], cell=cell, seed=cell * 7 + 1,
                               attention_stimuli=[("att1", "attention-check", "avatar"), ("att2", "attention-check", "avatar")]))
    return spec, out


def test_cell_count_is_lcm_of_pages():
    spec = parse_spec(SPEC)
    # likert: 6 treatments; pairwise: 2 * C(6,2) = 30; slider: 6 -> lcm 30
    assert cell_count(spec) == 30


def test_each_participant_sees_each_utterance_once_and_each_treatment_equally_often():
    _, all_plans = plans()
    for plan in all_plans:
        likert = [t for t in plan if t.page_index == 0 and t.kind == "rated"]
        assert sorted(t.slots[0].utterance for t in likert) == UTTS
        per_treatment = Counter((t.slots[0].condition, t.slots[0].embodiment) for t in likert)
        assert len(per_treatment) == 6 and set(per_treatment.values()) == {5}


def test_over_all_cells_every_utterance_meets_every_treatment_equally():
    _, all_plans = plans()
    cells = Counter()
    for plan in all_plans:
        for t in plan:
            if t.page_index == 0 and t.kind == "rated":
                s = t.slots[0]
                cells[(s.utterance, s.condition, s.embodiment)] += 1
    assert len(cells) == 30 * 6 and set(cells.values()) == {30 // 6}


def test_pairwise_pairs_balanced_and_left_right_counterbalanced():
    _, all_plans = plans()
    sides = Counter()
    pairs = Counter()
    for plan in all_plans:
        for t in plan:
            if t.page_index == 1:
                a, b = (s.condition + "/" + s.embodiment for s in t.slots)
                sides[(a, b)] += 1
                pairs[frozenset((a, b))] += 1
                assert t.slots[0].utterance == t.slots[1].utterance
    assert len(pairs) == 15 and len(set(pairs.values())) == 1
    for (a, b), n in sides.items():
        assert sides[(b, a)] == n  # each order as often as the other


def test_slider_positions_rotate_so_each_treatment_takes_each_position_equally():
    _, all_plans = plans()
    positions = Counter()
    for plan in all_plans:
        for t in plan:
            if t.page_index == 2:
                assert len(t.slots) == 6
                for pos, s in enumerate(t.slots):
                    positions[(s.condition, s.embodiment, pos)] += 1
                roles = {s.condition: s.role for s in t.slots}
                assert roles["gt"] == "hidden_reference" and roles["still"] == "anchor" and roles["rnd"] == "test"
    assert len(positions) == 36 and len(set(positions.values())) == 1


def test_an_open_reference_follows_the_rated_slots_once_per_embodiment_and_leaves_their_rotation_alone():
    with_reference = SPEC.replace("prompt: Rate, hidden_reference", "prompt: Rate, reference: gt, hidden_reference")
    spec, plain = parse_spec(with_reference), parse_spec(SPEC)
    assert spec["questions"]["mush"]["reference"] == "gt"
    training = "  - {type: training, question: mush, count: 2}\n"
    spec_t = parse_spec(with_reference.replace("pages:\n", "pages:\n" + training))
    for cell in range(cell_count(spec)):
        kwargs = dict(utterances=UTTS, training_utterances=["p1"], cell=cell, seed=cell,
                      attention_stimuli=[("att1", "attention-check", "avatar")])
        ours = [t for t in plan_trials(spec, **kwargs) if t.page_index == 2]
        theirs = [t for t in plan_trials(plain, **kwargs) if t.page_index == 2]
        assert len(ours) == len(theirs) == len(UTTS)
        for t, u in zip(ours, theirs):
            assert t.slots[:6] == u.slots  # the rated slots, their order and roles as without the reference
            utt = u.slots[0].utterance
            assert [(s.utterance, s.condition, s.embodiment, s.role) for s in t.slots[6:]] == [
                (utt, "gt", "avatar", "reference"), (utt, "gt", "robot_sim", "reference")]
        practice = [t for t in plan_trials(spec_t, **kwargs) if t.kind == "training"]
        assert len(practice) == 2
        for t in practice:  # a practice slider screen looks like the rated ones: the reference after the six
            assert [s.role for s in t.slots[6:]] == ["reference", "reference"]
            assert "reference" not in [s.role for s in t.slots[:6]]


def test_attention_checks_are_inserted_never_first_and_distinct():
    _, all_plans = plans()
    for plan in all_plans:
        page = [t for t in plan if t.page_index == 0]
        checks = [i for i, t in enumerate(page) if t.kind == "attention"]
        assert len(checks) == 2 and 0 not in checks
        assert len({page[i].slots[0].utterance for i in checks}) == 2


def test_order_differs_between_participants():
    _, all_plans = plans()
    orders = {tuple(t.slots[0].utterance for t in plan if t.page_index == 0) for plan in all_plans}
    assert len(orders) > 20


def test_balance_problems_explain_the_fix():
    spec = parse_spec(SPEC)
    problems = check_balance(spec, 31)
    assert any("multiple of the 6" in p for p in problems)
    assert any("15 pairs" in p for p in problems)
    assert check_balance(spec, 30) == []


SUBSET_SPEC = """\
slug: subsets
title: Subsets
stimuli:
  corpus: c
  conditions: [gt, rnd, sep, joint, still]
  embodiments: [avatar, robot_sim]
questions:
  nat: {type: likert, prompt: "Natural?"}
  pair: {type: pairwise, prompt: "Which?"}
  mush: {type: slider, prompt: Rate, hidden_reference: gt, anchor: still}
pages:
  - {type: trials, question: nat, attention_checks: 1}
  - {type: trials, question: mush, attention_checks: 0, embodiments: [avatar]}
  - {type: trials, question: pair, attention_checks: 0, conditions: [gt, sep, joint], embodiments: [robot_sim]}
  - {type: completion}
"""


def test_a_page_may_show_a_subset_of_the_treatments_and_stays_balanced():
    spec = parse_spec(SUBSET_SPEC)
    # likert over all 10 treatments; slider over the 5 avatar ones; pairwise over C(3,2)=3 robot pairs, x2 sides
    assert cell_count(spec) == 30
    utts = [f"u{i:02d}" for i in range(30)]
    pairs, positions = Counter(), Counter()
    for cell in range(30):
        plan = plan_trials(spec, utterances=utts, training_utterances=[], cell=cell, seed=cell,
                           attention_stimuli=[("att", "attention-check", "robot_sim"),
                                              ("att", "attention-check", "avatar")])
        for t in plan:
            if t.page_index == 1:
                assert [s.embodiment for s in t.slots] == ["avatar"] * 5
                assert {s.condition: s.role for s in t.slots}["gt"] == "hidden_reference"
                for pos, s in enumerate(t.slots):
                    positions[(s.condition, pos)] += 1
            if t.page_index == 2:
                assert {s.embodiment for s in t.slots} == {"robot_sim"}
                pairs[tuple(s.condition for s in t.slots)] += 1
    assert len(positions) == 25 and len(set(positions.values())) == 1
    # 3 pairs, each shown in both orders equally often
    assert set(pairs) == {("gt", "sep"), ("sep", "gt"), ("gt", "joint"), ("joint", "gt"), ("sep", "joint"),
                          ("joint", "sep")}
    assert len(set(pairs.values())) == 1
    assert check_balance(spec, 30) == []
    problems = check_balance(spec, 20)  # 20 is a multiple of 10 (likert) but not of the 3 pairs
    assert len(problems) == 1 and "3 pairs" in problems[0]


def test_a_pages_subset_must_name_the_studys_own_conditions():
    import pytest

    from studies.spec import SpecError

    bad = SUBSET_SPEC.replace("conditions: [gt, sep, joint]", "conditions: [gt, glow]")
    with pytest.raises(SpecError) as err:
        parse_spec(bad)
    assert "pages[2].conditions" in str(err.value) and "'glow'" in str(err.value)
    one = SUBSET_SPEC.replace("conditions: [gt, sep, joint], embodiments: [robot_sim]",
                              "conditions: [gt], embodiments: [robot_sim]")
    with pytest.raises(SpecError) as err:
        parse_spec(one)
    assert "fewer than two" in str(err.value)
    no_ref = SUBSET_SPEC.replace("question: mush, attention_checks: 0, embodiments: [avatar]",
                                 "question: mush, attention_checks: 0, conditions: [rnd, sep, still]")
    with pytest.raises(SpecError) as err:
        parse_spec(no_ref)
    assert "hidden_reference `gt`" in str(err.value)


def test_a_page_may_rate_a_rotating_window_of_the_utterances():
    text = SUBSET_SPEC.replace("question: mush, attention_checks: 0, embodiments: [avatar]",
                               "question: mush, attention_checks: 0, embodiments: [avatar], utterances: 4")
    text = text.replace("embodiments: [robot_sim]}", "embodiments: [robot_sim], utterances: 6}")
    spec = parse_spec(text)
    utts = [f"u{i:02d}" for i in range(30)]
    assert check_balance(spec, 30) == []
    spec["stimuli"]["resolved_utterances"] = utts
    # likert: 10 cells; slider: 5 positions x 15 windows of 4 in 30 (30/gcd(30,4)); pairwise: 6 x 5 windows
    assert cell_count(spec) == math.lcm(10, 5 * 15, 6 * 5)
    slider_utts, pair_cells = Counter(), Counter()
    for cell in range(cell_count(spec)):
        plan = plan_trials(spec, utterances=utts, training_utterances=[], cell=cell, seed=cell,
                           attention_stimuli=[("att", "attention-check", "avatar")])
        slider = [t for t in plan if t.page_index == 1]
        pairs = [t for t in plan if t.page_index == 2]
        assert len(slider) == 4 and len(pairs) == 6
        assert len({t.slots[0].utterance for t in slider}) == 4
        per_pair = Counter(frozenset(s.condition for s in t.slots) for t in pairs)
        assert set(per_pair.values()) == {2}  # each of the 3 pairs twice per participant
        slider_utts.update(t.slots[0].utterance for t in slider)
        pair_cells.update((t.slots[0].utterance, t.slots[0].condition, t.slots[1].condition) for t in pairs)
        likert = [t for t in plan if t.page_index == 0 and t.kind == "rated"]
        assert sorted(t.slots[0].utterance for t in likert) == utts  # pages without `utterances` rate all
    assert set(slider_utts) == set(utts) and len(set(slider_utts.values())) == 1
    # every utterance meets every pair in both orders equally often
    assert len(pair_cells) == 30 * 6 and len(set(pair_cells.values())) == 1


def test_a_page_rating_more_utterances_than_listed_or_an_unbalanced_number_is_refused():
    text = SUBSET_SPEC.replace("embodiments: [robot_sim]}", "embodiments: [robot_sim], utterances: 40}")
    problems = check_balance(parse_spec(text), 30)
    assert len(problems) == 1 and "rates 40 utterances but the study lists 30" in problems[0]
    text = SUBSET_SPEC.replace("embodiments: [robot_sim]}", "embodiments: [robot_sim], utterances: 4}")
    problems = check_balance(parse_spec(text), 30)
    assert len(problems) == 1 and "(4)" in problems[0] and "3 pairs" in problems[0]
    assert "pages[2].utterances" in problems[0]
