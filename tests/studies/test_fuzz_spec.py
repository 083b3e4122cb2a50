"""Fuzzing the study YAML loader (issue 7 §4): whatever text a researcher loads, `study_load` either stores
it (and `dump_study` gives the same bytes back) or refuses it with a SpecError whose every problem says where
it is and how to fix it. Never another exception, never a hang, and a refused file changes nothing.

The inputs: arbitrary text, arbitrary YAML documents, and mutations of the demo study (a key deleted, a value
of the wrong type, unknown keys, numbers huge/negative/NaN, strings empty/very long/unicode/with NUL, tabs,
duplicated lines, a cut-off file); then YAML bombs (anchors and aliases) and deep nesting, which must be
refused at once. Each example runs in a savepoint that is rolled back, so examples cannot see each other.
"""
from __future__ import annotations

import copy
import datetime
import io
import math
import signal
import time
from collections import Counter
from contextlib import contextmanager

import pytest
import yaml
from django.core.management import call_command
from django.db import transaction
from django.urls import reverse
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from studies import services
from studies.demo import demo_spec_text
from studies.models import Condition, Corpus, Stimulus, Study, StudyVersion, Utterance
from studies.spec import TITLE_MAX, TOP_KEYS, SpecError, SpecProblem, parse_spec
from tests.conftest import fuzz_examples

FUZZ = settings(
    max_examples=fuzz_examples(100),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
DEMO_TEXT = demo_spec_text(quick=True)
DEMO = yaml.safe_load(DEMO_TEXT)
SECONDS_PER_LOAD = 5  # a spec, however hostile, is accepted or refused well within this


# ------------------------------------------------------------------------------------------- strategies
ODD_STRINGS = st.sampled_from([
    "", " ", "\t", "\n", "\x00", "a\x00b", "x" * 5000, "ÄÖü 漢字 🙂", "\u202e\u200b", "yes", "null", "~", "1e3",
    "-", "all", "ground_truth", "likert", "trials", "completion", "*alias", "&anchor", "{", "[", "#", ": ",
])
ODD_NUMBERS = st.sampled_from([0, -1, 1, 2, 7, 255, 256, 2**31, 2**63, 10**30, -10**30, 0.5, -0.0, 1e308,
                               math.nan, math.inf, -math.inf])
SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats() | ODD_NUMBERS | ODD_STRINGS | st.text(max_size=30)
    | st.dates() | st.binary(max_size=8)
)
HASHABLE_KEYS = st.text(max_size=12) | st.integers() | st.booleans() | st.none() | st.sampled_from(list(TOP_KEYS))
YAML_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(HASHABLE_KEYS, children, max_size=4),
    max_leaves=20,
)


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, path + (i,))


DEMO_PATHS = list(_paths(DEMO))


def _dump(value, **options) -> str:
    """YAML text for a generated document (libyaml's dumper: ten times faster than PyYAML's own)."""
    return yaml.dump(value, Dumper=yaml.CSafeDumper, sort_keys=False, **options)


def _at(node, path):
    for step in path:
        node = node[step]
    return node


@st.composite
def mutated_demo_specs(draw) -> str:
    """The demo study with one to three of its values or keys broken, dumped back to YAML text."""
    spec = copy.deepcopy(DEMO)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(DEMO_PATHS))
        try:
            node = _at(spec, path)
            parent = _at(spec, path[:-1]) if path else None
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this part
        op = draw(st.sampled_from(["delete", "replace", "unknown_key", "number", "string"]))
        if op == "unknown_key" or parent is None:
            target = node if isinstance(node, dict) else spec
            target[draw(HASHABLE_KEYS)] = draw(YAML_VALUES)
        elif op == "delete":
            del parent[path[-1]]
        elif op == "replace":
            parent[path[-1]] = draw(YAML_VALUES)
        elif op == "number":
            parent[path[-1]] = draw(ODD_NUMBERS | st.integers() | st.floats())
        else:
            parent[path[-1]] = draw(ODD_STRINGS | st.text(min_size=1, max_size=40))
    text = _dump(spec, allow_unicode=draw(st.booleans()))
    lines = text.splitlines(keepends=True)
    damage = draw(st.sampled_from(["none", "none", "tab", "duplicate_line", "cut"]))
    at = draw(st.integers(0, max(len(lines) - 1, 0)))
    if damage == "tab":
        lines[at] = "\t" + lines[at]
    elif damage == "duplicate_line":  # usually a duplicated key
        lines.insert(at, lines[at])
    elif damage == "cut":
        return "".join(lines)[: draw(st.integers(0, len(text)))]
    return "".join(lines)


YAML_DOCUMENTS = st.builds(
    lambda value, flow: _dump(value, default_flow_style=flow, allow_unicode=True),
    YAML_VALUES | st.dictionaries(st.sampled_from(list(TOP_KEYS)), YAML_VALUES, max_size=8),
    st.booleans(),
)


# ----------------------------------------------------------------------------------------------- checks
def _database():
    """What a study load may change: the studies and their versions, and what they refer to."""
    return {
        "studies": list(Study.objects.order_by("pk").values_list("pk", "slug", "title", "status")),
        "versions": list(StudyVersion.objects.order_by("pk").values_list("pk", "study_id", "number", "spec_yaml")),
        "conditions": list(Condition.objects.order_by("pk").values_list("pk", "name", "kind", "params")),
        "corpora": Corpus.objects.count(),
        "utterances": Utterance.objects.count(),
        "stimuli": Stimulus.objects.count(),
    }


@contextmanager
def _within(seconds: float):
    """Fail (instead of hanging the run) when the block takes longer than `seconds`."""
    def too_slow(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def assert_clear_refusal(exc: SpecError):
    assert exc.problems, "a SpecError must list its problems"
    for problem in exc.problems:
        assert isinstance(problem, SpecProblem)
        assert problem.path or problem.line, f"{problem} says neither the key nor the line"
        assert isinstance(problem.message, str) and problem.message.strip(), problem
        assert isinstance(problem.fix, str) and problem.fix.strip(), f"{problem} gives no fix"
    assert str(exc)


def assert_round_trip(version: StudyVersion, text: str):
    """A loaded spec is stored as written, dumps back byte for byte, reloads as no change, and is reachable."""
    stored = StudyVersion.objects.get(pk=version.pk)
    assert stored.spec_yaml == text
    assert stored.spec == version.spec  # the normalised spec survives the JSON column unchanged
    dumped = io.StringIO()
    call_command("dump_study", version.study.slug, stdout=dumped)
    assert dumped.getvalue() == text
    assert services.study_load(text=dumped.getvalue()) == (stored, False)
    reverse("study_dashboard", args=[version.study.slug])


def load_or_refuse(text: str, *, round_trip: bool = True) -> str:
    """Load `text` in a savepoint that is rolled back; check the property; say which way it went."""
    with transaction.atomic():
        before = _database()
        try:
            with _within(SECONDS_PER_LOAD):
                version, created = services.study_load(text=text)
        except SpecError as exc:
            assert_clear_refusal(exc)
            assert _database() == before, "a refused spec changed the database"
            outcome = "refused"
        else:
            assert created
            if round_trip:
                assert_round_trip(version, text)
            outcome = "loaded"
        transaction.set_rollback(True)
    return outcome


# ------------------------------------------------------------------------------------------------ tests
def test_the_unchanged_demo_spec_loads(db):
    assert load_or_refuse(DEMO_TEXT) == "loaded"


@FUZZ
@given(text=st.text(max_size=300))
@example(text="")
@example(text="\x00")
@example(text="- a\n- b\n")
@example(text="slug: [unclosed")
@example(text="%YAML 1.1\n--- !!python/object:os.system\nargs: [true]\n")
@example(text="a: 1\n---\nb: 2\n")
def test_arbitrary_text_is_loaded_or_clearly_refused(db, text):
    load_or_refuse(text)


@FUZZ
@given(text=YAML_DOCUMENTS)
def test_arbitrary_yaml_documents_are_loaded_or_clearly_refused(db, text):
    load_or_refuse(text)


@settings(FUZZ, max_examples=fuzz_examples(150))
@given(text=mutated_demo_specs())
def test_mutated_demo_specs_are_loaded_or_clearly_refused(db, text):
    load_or_refuse(text)


def _edit(text: str, old: str, new: str) -> str:
    """`text` with `old` replaced; `old` must be there (a changed demo spec must not silently weaken a test)."""
    assert old in text, f"the demo spec no longer contains {old!r}"
    return text.replace(old, new)


# The demo study with every optional section written out, so that each key has a value to break.
FULL_TEXT = _edit(
    DEMO_TEXT,
    "  conditions: [ground_truth, random_alignment, still]\n",
    "  conditions: [ground_truth, random_alignment, {name: still, kind: still, description: A still face.}]\n"
    "  utterances: [utt01, utt02, utt03]\n"
    "  render: {width: 512, height: 512, fps: 25, background: [226, 231, 238], framing: head, lighting: studio}\n",
) + """\
  abandon_after_minutes: 45
  mturk:
    title: Rate talking faces
    description: Watch short videos of talking faces and rate them.
    keywords: video, rating
    assignment_duration_minutes: 60
    lifetime_hours: 72
    auto_approval_hours: 72
    min_approval_rate: 95
    min_approved_hits: 100
    locales: [US, GB]
"""
FULL = yaml.safe_load(FULL_TEXT)
assert FULL["recruitment"]["mturk"]["locales"] == ["US", "GB"], "the demo spec no longer ends with `recruitment:`"
WRONG_VALUES = ["(deleted)", None, -1, math.nan, "x" * 300, "a\x00b", "fine\n", datetime.date(2020, 1, 1),
                ["x"], {"x": 1}]


def _one_wrong_value_variants():
    """(path, value, text): each key of the full demo spec (one per place in the schema: `pages[*].question`
    once) deleted, and replaced by each wrong value, one at a time."""
    places = {}
    for path in list(_paths(FULL))[1:]:
        places.setdefault(tuple("*" if isinstance(step, int) else step for step in path), path)
    for path in places.values():
        for value in WRONG_VALUES:
            spec = copy.deepcopy(FULL)
            parent = _at(spec, path[:-1])
            if value == "(deleted)":
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
            yield path, value, _dump(spec, allow_unicode=True)


def test_every_value_of_the_full_demo_spec_swapped_for_a_wrong_one_is_loaded_or_clearly_refused(db):
    """The systematic half of the mutations (random ones rarely hit one key with one wrong type). Variants that
    parse_spec refuses are checked without the database (it reads none); the rest go through study_load (the
    round trip of what loads is the random tests' business: here it would double the time)."""
    assert load_or_refuse(FULL_TEXT) == "loaded"
    outcomes, failures = Counter(), []
    for path, value, text in _one_wrong_value_variants():
        try:
            try:
                parse_spec(text)
            except SpecError as exc:
                assert_clear_refusal(exc)
                outcomes["refused"] += 1
            else:
                outcomes[load_or_refuse(text, round_trip=False)] += 1
        except Exception as exc:  # noqa: BLE001 - every failing variant is listed below, not just the first
            failures.append(f"{'.'.join(map(str, path))} = {value!r}: {type(exc).__name__}: {str(exc)[:200]}")
    assert not failures, "\n".join(failures)
    assert outcomes["refused"] > 100 and outcomes["loaded"] > 10  # both ways were exercised


def _billion_laughs(levels: int, width: int, where: str) -> str:
    lines = ["a0: &a0 [lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(width))}]")
    bomb = "\n".join(lines) + "\n"
    if where == "embodiments":
        return bomb + _edit(DEMO_TEXT, "embodiments: [avatar]", f"embodiments: *a{levels - 1}")
    if where == "title":
        return bomb + _edit(DEMO_TEXT, "title: How natural do these talking faces look?", f"title: *a{levels - 1}")
    return bomb + DEMO_TEXT  # the bomb under unknown top-level keys


@pytest.mark.parametrize("where", ["unknown key", "embodiments", "title"])
def test_a_yaml_bomb_is_refused_at_once(db, where):
    text = _billion_laughs(levels=9, width=9, where=where)  # 9**8 = 43 million leaves when expanded
    started = time.monotonic()
    with pytest.raises(SpecError) as info, _within(SECONDS_PER_LOAD):
        services.study_load(text=text)
    assert time.monotonic() - started < 2
    assert_clear_refusal(info.value)
    assert any("alias" in p.message or "alias" in p.fix for p in info.value.problems)


@settings(FUZZ, max_examples=fuzz_examples(40))
@given(levels=st.integers(2, 12), width=st.integers(1, 12), where=st.sampled_from(["unknown key", "embodiments", "title"]))
def test_anchor_and_alias_expansions_of_any_size_are_loaded_or_clearly_refused(db, levels, width, where):
    load_or_refuse(_billion_laughs(levels, width, where))


@pytest.mark.parametrize("text", [
    "[" * 5000 + "]" * 5000,
    "a:\n" + "".join("  " * i + "- \n" for i in range(1, 2000)),
    "".join("  " * i + "a:\n" for i in range(2000)),
    "title: " + "{a: " * 3000 + "1" + "}" * 3000,
])
def test_absurdly_deep_nesting_is_refused(db, text):
    """(It was a RecursionError inside PyYAML's composer.)"""
    with pytest.raises(SpecError) as info, _within(SECONDS_PER_LOAD):
        parse_spec(text)
    assert_clear_refusal(info.value)
    assert "nested more than" in info.value.problems[0].message


# ------------------------------------------------------------------- regressions: what the fuzzing found
def refused(text: str) -> SpecError:
    with pytest.raises(SpecError) as info, _within(SECONDS_PER_LOAD):
        with transaction.atomic():
            services.study_load(text=text)
    assert_clear_refusal(info.value)
    return info.value


TRAINING_PAGE = "  - type: training\n    question: naturalness\n"
TITLE = "title: How natural do these talking faces look?"


@pytest.mark.parametrize("text,path", [
    # looped for ever looking for the line of a missing top-level key
    pytest.param("title: x\n", "slug", id="missing-slug-hung"),
    pytest.param(_edit(DEMO_TEXT, "pages:\n", "pagez:\n"), "pages", id="missing-pages-hung"),
    # TypeError: unhashable type: 'list'
    pytest.param(_edit(DEMO_TEXT, TRAINING_PAGE, "  - type: training\n    question: [naturalness]\n"), "pages[3].question",
                 id="question-as-a-list"),
    pytest.param(_edit(DEMO_TEXT, "{key: upper,", "{key: [upper],"), "questions.naturalness.items[0].key",
                 id="item-key-as-a-list"),
    # stored, but unreachable (no URL matches a slug with a newline)
    pytest.param(_edit(DEMO_TEXT, "slug: demo-face-motion-quick", 'slug: "demo-face-motion-quick\\n"'), "slug",
                 id="slug-with-a-trailing-newline"),
    # DataError on PostgreSQL: value too long for the title column, NUL characters in text and JSON columns
    pytest.param(_edit(DEMO_TEXT, TITLE, "title: " + "x" * 201), "title", id="title-longer-than-its-column"),
    pytest.param(_edit(DEMO_TEXT, TITLE, 'title: "a\\0b"'), "title", id="nul-in-the-title"),
    pytest.param(_edit(DEMO_TEXT, "    prompt: How natural is the motion of this face?", '    prompt: "How\\0"'),
                 "questions.naturalness.prompt", id="nul-in-a-prompt"),
    pytest.param(_edit(DEMO_TEXT, "corpus: demo-quick", 'corpus: "demo-quick\\0"'), "stimuli.corpus",
                 id="nul-in-the-corpus-name"),
    # TypeError: Object of type date is not JSON serializable (text keys that nothing checked)
    pytest.param(_edit(FULL_TEXT, "description: Watch short videos of talking faces and rate them.", "description: 2020-01-01"),
                 "recruitment.mturk.description", id="date-as-the-mturk-description"),
    pytest.param(_edit(FULL_TEXT, "description: A still face.", "description: 2020-01-01"),
                 "stimuli.conditions[2].description", id="date-as-a-condition-description"),
])
def test_inputs_the_fuzzing_found_are_refused_naming_their_key(db, text, path):
    assert path in {p.path for p in refused(text).problems}


def test_the_specs_title_limit_is_the_title_columns():
    assert TITLE_MAX == Study._meta.get_field("title").max_length


@pytest.mark.parametrize("text,line", [
    pytest.param("slug: a\x07b\n", 1, id="control-character"),
    pytest.param("slug: ab\ntitle: x\x00\n", 2, id="nul-character"),
    pytest.param(DEMO_TEXT + "? ''\n: null\n", DEMO_TEXT.count("\n") + 1, id="empty-key"),
])
def test_problems_the_fuzzing_found_without_a_line_now_name_it(db, text, line):
    assert line in {p.line for p in refused(text).problems}
