"""Fuzzing the participant endpoints (issue 7 §4) through Django's test client with CSRF checks on, as in a
browser: the study link with random recruiting parameters, page forms with random fields and page numbers,
watch reports and answers with random JSON (wrong types, huge numbers, NaN and Infinity, nested values, other
trials' tokens, non-JSON bodies, wrong content types), and video requests with random tokens and ranges.

The property: never a 5xx; a refused request (a 4xx, or a page form sent back with an error) changes no
participant, trial, watch record or response; an accepted one did what it says (a session bound, the answers
stored as given, the counters raised). Each example runs in a savepoint that is rolled back, so examples
cannot see each other.
"""
from __future__ import annotations

import copy
import json
import math
import uuid
from contextlib import contextmanager
from datetime import timedelta
from urllib.parse import quote, urlencode

import pytest
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from studies import selectors, services
from studies.models import Participant, Response, Stimulus, Trial, TrialStimulus, WatchRecord
from studies.spec import DEMOGRAPHIC_FIELDS
from studies.views.participant import MTURK_PREVIEW, SESSION_KEY
from tests.conftest import ParticipantDriver, fuzz_examples

FUZZ = settings(
    max_examples=fuzz_examples(60),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# ------------------------------------------------------------------------------------------- strategies
# What breaks code that handles text: NUL bytes (no PostgreSQL text column takes one), digits int() refuses
# ("²") or reads ("٣٤"), very long, right-to-left, markup, numbers in words.
ODD_TEXT = st.sampled_from(["\x00", "", " ", "a\x00b", "x" * 3000, "ÄÖü 漢字 🙂", "\u202e\u200b", "<script>", "٣٤", "²",
                            "-1", "1e9", "NaN"])
TEXT = ODD_TEXT | st.text(max_size=30)
ODD_NUMBERS = st.sampled_from([0, 1, -1, 2, 7, 0.5, 1.5, 2**31, 2**63, 2**64, 10**30, -10**30, 1e308, math.nan,
                               math.inf, -math.inf, True, False])
NUMBERS = st.integers() | st.floats() | ODD_NUMBERS
JSON_SCALARS = st.none() | st.booleans() | NUMBERS | TEXT
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=8,
)
CONTENT_TYPES = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", "",
                                 "application/x-www-form-urlencoded", "multipart/form-data", "application/xml"])


def _body(draw, valid: dict, broken: dict) -> tuple[bytes, str]:
    """A request body: mostly a valid JSON object (the `valid` field strategies) with up to two fields dropped or
    replaced from `broken` and maybe unknown keys added; sometimes any JSON value, bytes or text. Mostly sent as
    JSON, sometimes under another content type."""
    kind = draw(st.sampled_from(["object"] * 6 + ["json", "raw"]))
    if kind == "object":
        body = draw(st.fixed_dictionaries(valid))
        for name in draw(st.lists(st.sampled_from(sorted(valid)), max_size=2, unique=True)):
            if draw(st.booleans()):
                del body[name]
            else:
                body[name] = draw(broken[name])
        body.update(draw(st.dictionaries(TEXT, JSON_VALUES, max_size=2)))
        data = json.dumps(body).encode()  # NaN and Infinity are written as the bare literals
    elif kind == "json":
        data = json.dumps(draw(JSON_VALUES)).encode()
    else:
        data = draw(st.binary(max_size=60) | st.text(max_size=60).map(str.encode))
    content_type = "application/json" if draw(st.integers(0, 4)) else draw(CONTENT_TYPES)
    return data, content_type


# -------------------------------------------------------------------------------------------- the world
class CsrfDriver(ParticipantDriver):
    """The conftest driver in a browser that enforces CSRF, sending the token as the pages' forms and trial.js do."""

    def __init__(self, study):
        super().__init__(Client(enforce_csrf_checks=True), study)

    @property
    def csrf(self) -> str:
        return self.client.cookies["csrftoken"].value

    def submit_page(self, data=None):
        self.page()  # the form's page sets the CSRF cookie
        return super().submit_page({"csrfmiddlewaretoken": self.csrf, **(data or {})})

    def post_json(self, name, body):
        return self.client.post(reverse(name, args=[self.study.public_token]), body, content_type="application/json",
                                HTTP_X_CSRFTOKEN=self.csrf)


def to_first_trial(driver):
    driver.start()
    driver.submit_page({"agree": "yes"})
    driver.submit_page({})
    driver.submit_page({"digits": selectors.av_check_stimulus(driver.participant.version.spec).expected_answer["digits"]})
    driver.page()
    return driver.current_trial()


def state(study) -> dict:
    """Everything a participant request may change."""
    return {
        "participants": list(Participant.objects.filter(study=study).order_by("pk").values(
            "pk", "status", "page_index", "page_data", "demographics", "external_session", "external_id_hash",
            "completion_code", "completed_at", "last_seen_at", "cell")),
        "trials": list(Trial.objects.filter(participant__study=study).order_by("pk").values_list(
            "pk", "answered_at", "submission_id", "first_shown_at")),
        "watch": list(WatchRecord.objects.order_by("pk").values_list(
            "trial_stimulus_id", "ended", "ended_at", "watched_fraction", "seeks", "pauses", "replays", "hidden_ms",
            "playback_errors")),
        "responses": list(Response.objects.order_by("pk").values_list(
            "trial_id", "item", "slot", "value", "choice", "strength", "answer_ms", "stimulus_id")),
    }


@contextmanager
def rolled_back(client: Client):
    """One example: its database writes and the browser's cookies are undone afterwards."""
    cookies = copy.deepcopy(client.cookies)
    with transaction.atomic():
        yield
        transaction.set_rollback(True)
    client.cookies = cookies


def assert_no_server_error(r, what):
    assert r.status_code < 500, f"{what} -> {r.status_code}: {r.content[:400]!r}"


def assert_refused_cleanly(r):
    """A refusal says why: the JSON endpoints' own refusals as {"ok": false, "message": ...} (Django's CSRF and
    unreadable-body refusals come before the view, as its plain pages)."""
    assert 400 <= r.status_code < 500
    if r["Content-Type"] == "application/json":
        assert r.json()["ok"] is False and r.json()["message"]


@pytest.fixture
def at_trial(demo_study):
    """A participant at their first trial, its page served; and another participant's first trial."""
    driver = CsrfDriver(demo_study)
    to_first_trial(driver)
    other = CsrfDriver(demo_study)
    return driver, to_first_trial(other)


def go_to_trial(driver, draw, *, watched: bool) -> Trial:
    """Put the participant (inside the example's savepoint) at the first trial of a drawn trial page (likert,
    slider or pairwise), shown a minute ago, its videos reported ended if `watched`."""
    firsts = {}
    for t in Trial.objects.filter(participant=driver.participant).order_by("position"):
        firsts.setdefault(t.page_index, t)
    trial = draw(st.sampled_from(sorted(firsts.values(), key=lambda t: t.position)), label="trial")
    Participant.objects.filter(pk=driver.participant.pk).update(page_index=trial.page_index)
    Trial.objects.filter(pk=trial.pk).update(first_shown_at=timezone.now() - timedelta(seconds=60))
    if watched:
        WatchRecord.objects.bulk_create([WatchRecord(trial_stimulus=ts, ended=True, ended_at=timezone.now(),
                                                     watched_fraction=1.0) for ts in trial.slots.all()])
    return Trial.objects.get(pk=trial.pk)


# ------------------------------------------------------------------------------------------------ entry
QUERY_KEYS = st.sampled_from(["mode", "key", "bot_id", "PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "assignmentId",
                              "workerId", "hitId", "turkSubmitTo", "e", "id"]) | TEXT
QUERY_VALUES = TEXT | st.sampled_from(["pilot", "bot", MTURK_PREVIEW, "(pilot key)", "A3PV6Z1EXAMPLE"])


@FUZZ
@given(query=st.lists(st.tuples(QUERY_KEYS, QUERY_VALUES), max_size=6), token=st.none() | st.none() | st.none() | TEXT,
       user_agent=TEXT)
def test_study_links_with_any_parameters(demo_study, query, token, user_agent):
    browser = Client(enforce_csrf_checks=True)
    study_token = demo_study.public_token if token is None else token
    pairs = [(k, services.pilot_key(demo_study) if v == "(pilot key)" else v) for k, v in query]
    url = f"/s/{quote(study_token, safe='')}/" + ("?" + urlencode(pairs) if pairs else "")
    with rolled_back(browser):
        before = state(demo_study)
        r = browser.get(url, HTTP_USER_AGENT=user_agent)
        assert_no_server_error(r, url)
        event(f"status {r.status_code}")
        after = state(demo_study)
        if r.status_code == 302 and r["Location"].startswith(reverse("take", args=[demo_study.public_token])):
            bound = browser.session[SESSION_KEY][demo_study.public_token]
            participant = Participant.objects.get(public_id=bound)
            assert len(after["participants"]) == len(before["participants"]) + 1
            assert Trial.objects.filter(participant=participant).exists()
            raw_ids = {v for k, v in pairs if k in ("PROLIFIC_PID", "workerId") and v}
            assert participant.external_id_hash not in raw_ids  # worker ids are stored only as keyed hashes
            assert_no_server_error(browser.get(r["Location"]), "the first page")
        else:
            assert after == before, f"{url} -> {r.status_code} changed the database"


# ------------------------------------------------------------------------------------------ page forms
def _form(page: dict, digits: str):
    """A form for the page: its own fields with plausible or odd values, sometimes random extra fields."""
    own = {
        "consent": {"agree": st.sampled_from(["yes", "on", "1", "no", ""]) | TEXT},
        "av_check": {"digits": st.sampled_from([digits, digits[::-1], f" {digits} ", "000"]) | TEXT},
        "demographics": {name: st.integers(0, 200).map(str) | TEXT for name in page.get("fields", [])},
    }.get(page["type"], {})
    return st.fixed_dictionaries({}, optional=own).flatmap(
        lambda form: st.dictionaries(TEXT, TEXT, max_size=2).map(lambda extra: {**extra, **form}))


@pytest.fixture
def at_consent(demo_study):
    driver = CsrfDriver(demo_study)
    driver.start()
    driver.page()
    return driver


@FUZZ
@given(data=st.data())
def test_page_forms_with_any_fields(at_consent, data):
    driver, demo_study = at_consent, at_consent.study
    pages = driver.participant.version.spec["pages"]
    with rolled_back(driver.client):
        forms = [i for i, page in enumerate(pages) if page["type"] in ("consent", "av_check", "demographics")]
        at = data.draw(st.sampled_from(forms * 3 + list(range(len(pages)))), label="page the participant is on")
        status = data.draw(st.sampled_from(["active"] * 8 + ["completed", "screened_out", "abandoned"]), label="status")
        Participant.objects.filter(pk=driver.participant.pk).update(page_index=at, status=status)
        posted = data.draw(st.sampled_from([at] * 6 + [max(at - 1, 0), at + 1, 0, 10**20]) | st.integers(0, 2**64),
                           label="page posted")
        digits = selectors.av_check_stimulus(driver.participant.version.spec).expected_answer["digits"]
        form = data.draw(_form(pages[at], digits), label="form")
        csrf = data.draw(st.sampled_from(["token"] * 8 + ["missing", "wrong"]), label="csrf")
        if csrf != "missing":
            form["csrfmiddlewaretoken"] = driver.csrf if csrf == "token" else "x" * 32
        before = state(demo_study)
        url = f"/t/{demo_study.public_token}/page/{posted}/"
        r = driver.client.post(url, form)
        assert_no_server_error(r, f"{url} {form!r}")
        event(f"{pages[at]['type']}: {r.status_code} {driver.client.session.get('page_error', 'no error')[:30]}")
        after = state(demo_study)
        page = pages[at]
        wrong_digits = "".join(ch for ch in str(form.get("digits", "")) if ch.isdigit()) != digits
        if r.status_code >= 400 or csrf != "token":  # refused before the view (CSRF, an unreadable body)
            assert r.status_code in (400, 403) and after == before
        elif status == "active" and posted == at and page["type"] == "av_check" and wrong_digits:
            # A wrong A/V check answer is counted (the last allowed one screens out); nothing else changes.
            [was], [now] = before["participants"], after["participants"]
            attempts = now["page_data"].get("av_check_attempts", 0)
            assert attempts == was["page_data"].get("av_check_attempts", 0) + 1 and now["page_index"] == at
            assert (now["status"] == "screened_out") == (attempts >= page["max_attempts"])
        elif "page_error" in driver.client.session or posted != at or status != "active":
            assert r.status_code == 302 and after == before, f"{url} {form!r} changed the database"
        else:  # accepted: on to the next page
            participant = driver.participant
            assert participant.page_index == at + 1
            if page["type"] == "demographics":
                assert set(participant.demographics) <= set(page["fields"])
                age = participant.demographics.get("age")
                assert age is None or (isinstance(age, int) and 16 <= age <= 110)
        assert_no_server_error(driver.page(), "the page after the form")


# Ages as people type them, and strings of Unicode number characters ("٣٤", "²", "①"): isdigit() and int() disagree.
AGES = (st.sampled_from(["²", "3²", "①", "٣٤", "３４", " 34 ", "1e2", "-1", "0", "999"])  # hypothesis favours the first
        | st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=3) | st.integers(-5, 200).map(str) | TEXT)


@settings(FUZZ, max_examples=fuzz_examples(40))
@given(answers=st.fixed_dictionaries({"age": AGES}, optional={name: TEXT for name in DEMOGRAPHIC_FIELDS[1:]}))
def test_any_demographics_answers(at_consent, answers):
    """The one form with free text: whatever is typed is stored cleaned, or refused with nothing changed."""
    driver = at_consent
    pages = driver.participant.version.spec["pages"]
    at = next(i for i, page in enumerate(pages) if page["type"] == "demographics")
    with rolled_back(driver.client):
        Participant.objects.filter(pk=driver.participant.pk).update(page_index=at)
        before = state(driver.study)
        r = driver.submit_page(answers)
        assert_no_server_error(r, answers)
        event(driver.client.session.get("page_error", "accepted")[:30])
        if "page_error" in driver.client.session:
            assert state(driver.study) == before
        else:
            stored = driver.participant.demographics
            assert driver.participant.page_index == at + 1 and set(stored) <= set(pages[at]["fields"])
            assert all(isinstance(v, int) and 16 <= v <= 110 if k == "age" else "\x00" not in v for k, v in stored.items())
        assert_no_server_error(driver.page(), "the page after the form")


# --------------------------------------------------------------------------------------- watch reports
def _trial_ids(trial, others_trial):
    return st.sampled_from([trial.public_id, others_trial.public_id]) | TEXT | JSON_VALUES


@FUZZ
@given(data=st.data())
def test_watch_reports_with_any_body(at_trial, data):
    driver, others_trial = at_trial
    with rolled_back(driver.client):
        trial = go_to_trial(driver, data.draw, watched=False)
        if not data.draw(st.booleans(), label="shown long enough ago"):
            Trial.objects.filter(pk=trial.pk).update(first_shown_at=timezone.now())
        _watch_once(driver, trial, others_trial, data)


def _post_json_checked(driver, endpoint, body, content_type):
    """POST to a participant JSON endpoint: never a 5xx, and a refusal changes nothing and says why."""
    before = state(driver.study)
    r = driver.client.post(reverse(endpoint, args=[driver.study.public_token]), body, content_type=content_type,
                           HTTP_X_CSRFTOKEN=driver.csrf)
    assert_no_server_error(r, body)
    event(f"status {r.status_code} {r.json().get('error', '') if r['Content-Type'] == 'application/json' else ''}")
    if r.status_code >= 400:
        assert state(driver.study) == before, f"{body!r} -> {r.status_code} changed the database"
        assert_refused_cleanly(r)
    return r


def _watch_once(driver, trial, others_trial, data):
    slots = list(trial.slots.values_list("slot", flat=True))
    valid = {"trial": st.just(trial.public_id), "slot": st.sampled_from(slots), "ended": st.booleans(),
             "watched_fraction": st.floats(0, 1), **{name: st.integers(0, 100) for name in services.WATCH_INT_FIELDS}}
    broken = {"trial": _trial_ids(trial, others_trial), "slot": NUMBERS | JSON_VALUES, "ended": JSON_VALUES,
              **{name: NUMBERS | JSON_VALUES for name in ["watched_fraction", *services.WATCH_INT_FIELDS]}}
    body, content_type = _body(data.draw, valid, broken)
    r = _post_json_checked(driver, "watch", body, content_type)
    if r.status_code < 400:  # accepted: this participant's video, its counters at least what was reported
        report = json.loads(body)
        assert report["trial"] == trial.public_id
        record = WatchRecord.objects.get(trial_stimulus__trial=trial, trial_stimulus__slot=report["slot"])
        assert record.watched_fraction >= report.get("watched_fraction", 0.0)
        for name in services.WATCH_INT_FIELDS:
            assert getattr(record, name) >= report.get(name, 0)
        assert r.json()["ended"] == record.ended


@settings(FUZZ, max_examples=fuzz_examples(40))
@given(endpoint=st.sampled_from(["watch", "answer"]), token=TEXT | st.text(alphabet="\x00-_aZ09", max_size=30),
       others=st.booleans())
def test_any_trial_token_but_the_participants_own_is_not_found(at_trial, endpoint, token, others):
    driver, others_trial = at_trial
    token = others_trial.public_id if others else token
    body = {"trial": token, "slot": 0, "watched_fraction": 0.5, "submission_id": str(uuid.uuid4()), "answers": [],
            "answer_ms": 2500}
    with rolled_back(driver.client):
        before = state(driver.study)
        r = driver.post_json(endpoint, body)
        assert_no_server_error(r, body)
        assert r.status_code == 404 and r.json()["error"] == "not_found"
        assert state(driver.study) == before


# --------------------------------------------------------------------------------------------- answers
def _valid_answers(driver, trial):
    """Every item of the trial's question answered, with any value the question allows."""
    question = driver.participant.version.spec["questions"][trial.question]
    if question["type"] == "likert":
        value = st.fixed_dictionaries({"value": st.integers(1, question["points"])})
    elif question["type"] == "slider":
        value = st.fixed_dictionaries({"value": st.integers(0, 100) | st.floats(0, 100)})
    else:
        choices = ["A", "B"] + (["tie"] if question["allow_tie"] else [])
        value = st.fixed_dictionaries({"choice": st.sampled_from(choices)})
        if question["strength"]:
            value = value.map(lambda v: v if v["choice"] == "tie" else {**v, "strength": 1})
    keys = [(a["item"], a["slot"]) for a in driver.answers_for(trial)]
    return st.tuples(*[value.map(lambda v, k=k: {"item": k[0], "slot": k[1], **v}) for k in keys]).map(list)


def _broken_answers(driver, trial):
    """Answer lists: the right one with one field broken, or anything."""
    right = driver.answers_for(trial)
    broken_answer = st.fixed_dictionaries({}, optional={
        "item": st.sampled_from(["upper", "lower", "overall"]) | TEXT | JSON_VALUES,
        "slot": NUMBERS | JSON_VALUES, "value": NUMBERS | JSON_VALUES,
        "choice": st.sampled_from(["A", "B", "tie"]) | JSON_VALUES, "strength": NUMBERS | JSON_VALUES})

    @st.composite
    def one_field_broken(draw):
        answers = copy.deepcopy(right)
        i = draw(st.integers(0, len(answers) - 1))
        answers[i][draw(st.sampled_from(["item", "slot", "value", "choice", "strength", "extra"]))] = draw(JSON_VALUES)
        return answers

    return one_field_broken() | st.lists(broken_answer, max_size=4) | JSON_VALUES


@FUZZ
@given(data=st.data())
def test_answers_with_any_body(at_trial, data):
    driver, others_trial = at_trial
    with rolled_back(driver.client):
        trial = go_to_trial(driver, data.draw, watched=data.draw(st.sampled_from([True, True, True, False]), label="watched"))
        _answer_once(driver, trial, others_trial, data)


def _answer_once(driver, trial, others_trial, data):
    valid = {"trial": st.just(trial.public_id), "answers": _valid_answers(driver, trial),
             "submission_id": st.uuids().map(str), "answer_ms": st.integers(0, 86_400_000)}
    broken = {"trial": _trial_ids(trial, others_trial), "answers": _broken_answers(driver, trial),
              "submission_id": TEXT | JSON_VALUES, "answer_ms": NUMBERS | JSON_VALUES}
    body, content_type = _body(data.draw, valid, broken)
    r = _post_json_checked(driver, "answer", body, content_type)
    if r.status_code < 400:  # accepted: exactly the answers given, on this participant's trial
        assert r.status_code == 201
        sent = json.loads(body)
        assert sent["trial"] == trial.public_id
        saved = Response.objects.filter(trial=trial)
        assert saved.count() == len(sent["answers"])
        pairwise = driver.participant.version.spec["questions"][trial.question]["type"] == "pairwise"
        for answer in sent["answers"]:
            row = saved.get(item=answer["item"], slot=answer.get("slot", 0))
            if pairwise:
                assert row.choice == answer["choice"]
            else:
                assert row.value == answer["value"] and math.isfinite(row.value)
        assert Trial.objects.get(pk=trial.pk).submission_id == uuid.UUID(sent["submission_id"])


# ---------------------------------------------------------------------------------------------- videos
@FUZZ
@given(data=st.data())
def test_video_requests_with_any_token_and_range(at_trial, data):
    driver, _ = at_trial
    participant = driver.participant
    own = set(TrialStimulus.objects.filter(trial__participant=participant).values_list("stimulus__token", flat=True))
    own |= set(TrialStimulus.objects.filter(trial__participant=participant, token__isnull=False)
               .values_list("token", flat=True))  # the open references' own tokens
    own.add(selectors.av_check_stimulus(participant.version.spec).token)
    not_own = list(Stimulus.objects.exclude(token__in=own).values_list("token", flat=True)[:3])
    token = data.draw(st.sampled_from(sorted(own) + not_own) | TEXT, label="token")
    range_header = data.draw(st.none() | st.sampled_from(["bytes=0-", "bytes=0-99", "bytes=-100", "bytes=-0", "bytes=5-3",
                                                         "bytes=99999999999999999999-", "bytes=0-0,5-9", "bytes=٣-",
                                                         "items=0-1", "bytes=-"]) | TEXT, label="range")
    headers = {"HTTP_RANGE": range_header} if range_header is not None else {}
    with rolled_back(driver.client):
        before = state(driver.study)
        r = driver.client.get(f"/v/{quote(token, safe='')}.mp4", **headers)
        assert_no_server_error(r, (token, range_header))
        event(f"status {r.status_code}")
        assert state(driver.study) == before
        if token not in own:
            assert r.status_code == 404  # unknown and not-yours look the same
        else:
            assert r.status_code in (200, 206, 416)


# ------------------------------------------------------------------- regressions: what the fuzzing found
# Each of these was a 500: a NUL byte sent on to PostgreSQL (DataError), or int() of a digit it cannot read.
def test_a_user_agent_with_a_nul_byte_starts_a_session(demo_study):
    browser = Client()
    r = browser.get(reverse("entry", args=[demo_study.public_token]), HTTP_USER_AGENT="Mozilla\x00/5.0")
    assert r.status_code == 302
    assert Participant.objects.get(study=demo_study).user_agent == "Mozilla/5.0"


@pytest.mark.parametrize("url", ["/s/%00/", "/s/a%00b/", "/lab/%00/", "/v/%00.mp4"])
def test_a_token_with_a_nul_byte_is_not_found(at_trial, url):
    driver, _ = at_trial  # a browser with a session: the video lookup goes to the database only then
    before = state(driver.study)
    r = driver.client.get(url)
    assert r.status_code == 404 and state(driver.study) == before


def test_a_recruiting_link_with_a_nul_byte_is_refused_and_changes_nothing(demo_study):
    before = state(demo_study)
    r = Client().get(reverse("entry", args=[demo_study.public_token]) + "?PROLIFIC_PID=p1&STUDY_ID=s%00&SESSION_ID=x")
    assert r.status_code == 400 and b"not valid" in r.content
    assert state(demo_study) == before


@pytest.mark.parametrize("endpoint", ["watch", "answer"])
def test_a_trial_token_with_a_nul_byte_is_not_found(at_trial, endpoint):
    driver, _ = at_trial
    before = state(driver.study)
    r = driver.post_json(endpoint, {"trial": "\x00", "slot": 0, "submission_id": str(uuid.uuid4()), "answers": [],
                                    "answer_ms": 2500})
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert state(driver.study) == before


def _at_demographics(driver):
    pages = driver.participant.version.spec["pages"]
    at = next(i for i, page in enumerate(pages) if page["type"] == "demographics")
    Participant.objects.filter(pk=driver.participant.pk).update(page_index=at)
    return at


def test_a_nul_byte_in_a_demographics_answer_is_dropped(at_consent):
    at = _at_demographics(at_consent)
    r = at_consent.submit_page({"gender": "wo\x00man", "native_language": "\x00"})
    assert r.status_code == 302
    assert at_consent.participant.page_index == at + 1
    assert at_consent.participant.demographics == {"gender": "woman"}


@pytest.mark.parametrize("age", ["²", "①", "3²"])
def test_an_age_of_digits_int_cannot_read_is_refused(at_consent, age):
    at = _at_demographics(at_consent)
    before = state(at_consent.study)
    r = at_consent.submit_page({"age": age})
    assert r.status_code == 302 and "age" in at_consent.client.session["page_error"]
    assert at_consent.participant.page_index == at and state(at_consent.study) == before


def test_an_age_in_other_decimal_digits_is_read(at_consent):
    _at_demographics(at_consent)
    at_consent.submit_page({"age": "٣٤"})
    assert at_consent.participant.demographics == {"age": 34}
