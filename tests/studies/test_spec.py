"""The study YAML: defaults filled in, and every kind of mistake reported with its line and a fix."""
import pytest

from studies.spec import SpecError, parse_spec, reference

MINIMAL = """\
slug: tiny-study
title: Tiny
stimuli:
  corpus: demo
  conditions: [ground_truth, still]
questions:
  nat:
    type: likert
    prompt: How natural?
pages:
  - type: trials
    question: nat
  - type: completion
"""


def test_minimal_spec_gets_every_default():
    spec = parse_spec(MINIMAL)
    assert spec["stimuli"]["embodiments"] == ["avatar"]
    assert spec["questions"]["nat"]["points"] == 5
    assert spec["questions"]["nat"]["items"] == [{"key": "overall", "text": "How natural?"}]
    assert spec["pages"][0]["attention_checks"] == 1
    assert spec["quality"]["min_watch_fraction"] == 0.95
    assert spec["recruitment"]["mturk"]["title"] == "Tiny"


def problems(text):
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    return info.value.problems


def test_unknown_key_names_its_line_and_suggests_the_right_one():
    text = MINIMAL.replace("    prompt: How natural?", "    prompt: How natural?\n    pionts: 7")
    [p] = problems(text)
    assert p.line == 10 and p.path == "questions.nat.pionts"
    assert "points" in p.fix


def test_value_out_of_range_and_wrong_type_are_both_reported():
    text = MINIMAL.replace("    prompt: How natural?", "    prompt: How natural?\n    points: 40\n    labels: low")
    found = {p.path: p for p in problems(text)}
    assert found["questions.nat.points"].line == 10
    assert "between 2 and 11" in found["questions.nat.points"].fix
    assert found["questions.nat.labels"].line == 11


def test_trials_page_must_name_a_defined_question():
    [p] = problems(MINIMAL.replace("question: nat", "question: naturalness"))
    assert p.path == "pages[0].question" and p.line == 12 and "nat" in p.fix


def test_broken_yaml_reports_the_line():
    [p] = problems(MINIMAL.replace("  conditions: [ground_truth, still]", "  conditions: [ground_truth, still"))
    assert p.line is not None and "YAML" in p.message


def test_completion_must_be_last_and_slider_reference_must_be_a_condition():
    text = MINIMAL.replace("  - type: completion\n", "") + "  - type: completion\n  - type: instructions\n"
    text = text.replace("    type: likert", "    type: slider\n    hidden_reference: gt")
    found = {p.path for p in problems(text)}
    assert {"pages", "questions.nat.hidden_reference"} <= found


def test_not_a_mapping_at_all():
    [p] = problems("- just\n- a list\n")
    assert "mapping" in p.message


def test_reference_lists_every_section():
    text = reference()
    for key in ("stimuli:", "quality:", "recruitment:", "mturk:", "min_watch_fraction", "abandon_after_minutes"):
        assert key in text


def test_reference_writes_defaults_in_yaml_that_reads_back_as_the_code_defaults():
    import yaml

    from studies.spec import QUALITY_KEYS

    text = reference()
    assert not any(word in text.split() for word in ("None", "False", "True"))
    block = text[text.index("quality:"):text.index("recruitment:")]
    assert yaml.safe_load(block)["quality"] == QUALITY_KEYS


def test_a_time_shift_condition_may_be_a_catch_trial_and_nothing_else_may():
    text = ("slug: catch\ntitle: Catch\nstimuli:\n  corpus: c\n  conditions:\n    - ground_truth\n"
            "    - {name: sync-catch, kind: time_shift, ms: 600, catch: true}\n"
            "questions:\n  nat: {type: likert, prompt: \"Natural\"}\npages:\n  - {type: trials, question: nat}\n"
            "  - {type: completion}\n")
    spec = parse_spec(text)
    assert spec["stimuli"]["condition_definitions"]["sync-catch"]["params"] == {"ms": 600, "catch": True}
    small = problems(text.replace("ms: 600", "ms: 200"))
    assert any(p.path.endswith(".ms") and "at least 400 ms" in p.fix for p in small)
    wrong = problems(text.replace("{name: sync-catch, kind: time_shift, ms: 600, catch: true}",
                                  "{name: m, kind: model, model: x, catch: true}"))
    assert any(p.path.endswith(".catch") and "time_shift" in p.message for p in wrong)
