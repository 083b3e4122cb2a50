"""Saving a trial's answers: idempotent, validated, and refused (with nothing changed) for every kind of
bad submission: off the scale, before the video ended, another participant's trial, replays with a new
id, incomplete answers, out of order, malformed JSON, missing CSRF."""
import json
import uuid

import pytest
from django.test import Client
from django.urls import reverse

from studies.models import Response, Trial, WatchRecord


def to_first_trial(driver):
    driver.start()
    driver.submit_page({"agree": "yes"})  # consent
    driver.submit_page({})  # instructions
    from studies import selectors

    digits = selectors.av_check_stimulus(driver.participant.version.spec).expected_answer["digits"]
    driver.submit_page({"digits": digits})
    driver.page()
    return driver.current_trial()


def test_answer_is_saved_once_and_a_retry_with_the_same_id_is_accepted_without_a_duplicate(driver):
    trial = to_first_trial(driver)
    driver.watch_all(trial)
    sid = str(uuid.uuid4())
    first = driver.answer(trial, submission_id=sid)
    assert first.status_code == 201 and first.json()["saved"] is True
    n = Response.objects.filter(trial=trial).count()
    assert n == len(driver.answers_for(trial))
    again = driver.answer(trial, submission_id=sid)
    assert again.status_code == 200 and again.json()["saved"] is False
    assert Response.objects.filter(trial=trial).count() == n


def test_a_second_submission_with_another_id_is_refused(driver):
    trial = to_first_trial(driver)
    driver.watch_all(trial)
    assert driver.answer(trial).status_code == 201
    before = list(Response.objects.filter(trial=trial).values_list("value", flat=True))
    other = driver.answer(trial, answers=driver.answers_for(trial, value=7))
    assert other.status_code == 409 and other.json()["error"] == "answered"
    assert list(Response.objects.filter(trial=trial).values_list("value", flat=True)) == before


def test_answer_before_the_video_ended_is_refused(driver):
    trial = to_first_trial(driver)
    r = driver.answer(trial)
    assert r.status_code == 409 and r.json()["error"] == "not_watched"
    assert not Response.objects.filter(trial=trial).exists()
    assert Trial.objects.get(pk=trial.pk).answered_at is None


def test_ended_report_sooner_than_the_clip_could_play_is_refused(driver):
    trial = to_first_trial(driver)
    driver.page()  # shown just now
    slot = trial.slots.first()
    r = driver.post_json("watch", {"trial": trial.public_id, "slot": slot.slot, "ended": True, "watched_fraction": 1.0})
    assert r.status_code == 409 and r.json()["error"] == "too_early"
    assert not WatchRecord.objects.filter(trial_stimulus=slot, ended=True).exists()


def _facts(trial, **over):
    return [{"slot": s.slot, "ended": True, "watched_fraction": 1.0, "seeks": 1, "pauses": 2, "replays": 0,
             "hidden_ms": 40, "playback_errors": 0, **over} for s in trial.slots.all()]


def test_the_watch_facts_may_come_with_the_answer_and_are_stored_with_it(driver):
    """As trial.js sends them: no watch report of their own; the server checks 'ended' at the answer."""
    trial = to_first_trial(driver)
    driver.pretend_shown(trial)
    r = driver.post_json("answer", {"trial": trial.public_id, "submission_id": str(uuid.uuid4()),
                                    "answers": driver.answers_for(trial), "answer_ms": 2500, "watch": _facts(trial)})
    assert r.status_code == 201, r.content
    records = WatchRecord.objects.filter(trial_stimulus__trial=trial)
    assert records.count() == trial.slots.count()
    assert all(w.ended and w.watched_fraction == 1.0 and w.seeks == 1 and w.pauses == 2 and w.hidden_ms == 40
               for w in records)
    assert Response.objects.filter(trial=trial).count() == len(driver.answers_for(trial))


@pytest.mark.parametrize("watch, error", [
    ("too_early", "too_early"),  # 'ended' before the clip could have played: nothing saved, the page resends
    ([{"slot": 0, "ended": True, "watched_fraction": 2.0}], "invalid"),
    ([{"slot": "0", "ended": True}], "invalid"),
    ("not a list", "invalid"),
    ([{"slot": 0}] * 17, "invalid"),
    ([{"slot": 99, "ended": True, "watched_fraction": 1.0}], "not_found"),
    ([{"slot": 0, "ended": False, "watched_fraction": 0.4}], "not_watched"),
])
def test_an_answer_whose_watch_facts_are_refused_changes_nothing(driver, watch, error):
    trial = to_first_trial(driver)
    if watch == "too_early":
        driver.page()  # shown just now
        watch = _facts(trial)
    else:
        driver.pretend_shown(trial)
    r = driver.post_json("answer", {"trial": trial.public_id, "submission_id": str(uuid.uuid4()),
                                    "answers": driver.answers_for(trial), "answer_ms": 2500, "watch": watch})
    assert r.status_code in (400, 404, 409) and r.json()["error"] == error, r.content
    assert not WatchRecord.objects.filter(trial_stimulus__trial=trial).exists()
    assert not Response.objects.filter(trial=trial).exists()
    assert Trial.objects.get(pk=trial.pk).answered_at is None


def test_an_answer_whose_second_report_is_refused_keeps_none_of_the_first(driver):
    """All or nothing: a valid first report is not stored when a later one of the same answer is refused."""
    trial = to_first_trial(driver)
    driver.pretend_shown(trial)
    slot = trial.slots.first().slot
    watch = [{"slot": slot, "ended": True, "watched_fraction": 1.0}, {"slot": slot, "watched_fraction": -1}]
    r = driver.post_json("answer", {"trial": trial.public_id, "submission_id": str(uuid.uuid4()),
                                    "answers": driver.answers_for(trial), "answer_ms": 2500, "watch": watch})
    assert r.status_code == 400
    assert not WatchRecord.objects.filter(trial_stimulus__trial=trial).exists()


@pytest.mark.parametrize("value", [0, 8, 3.5, "4", None, True])
def test_value_off_the_likert_scale_is_refused(driver, value):
    trial = to_first_trial(driver)
    driver.watch_all(trial)
    answers = driver.answers_for(trial)
    answers[0]["value"] = value
    r = driver.answer(trial, answers=answers)
    assert r.status_code == 400 and r.json()["error"] in ("off_scale", "invalid")
    assert not Response.objects.filter(trial=trial).exists()


def test_incomplete_or_duplicated_items_are_refused(driver):
    trial = to_first_trial(driver)
    driver.watch_all(trial)
    answers = driver.answers_for(trial)
    assert driver.answer(trial, answers=answers[:1]).status_code == 400
    assert driver.answer(trial, answers=answers + answers[:1]).status_code == 400
    bad_item = [dict(a, item="middle") for a in answers]
    assert driver.answer(trial, answers=bad_item).status_code == 400
    assert not Response.objects.filter(trial=trial).exists()


def test_nobody_can_answer_another_participants_trial(driver, demo_study):
    trial = to_first_trial(driver)
    driver.watch_all(trial)
    intruder = Client()
    intruder.get(reverse("entry", args=[demo_study.public_token]))
    r = intruder.post(reverse("answer", args=[demo_study.public_token]), {
        "trial": trial.public_id, "submission_id": str(uuid.uuid4()), "answers": driver.answers_for(trial), "answer_ms": 2000,
    }, content_type="application/json")
    assert r.status_code == 404
    r = intruder.post(reverse("watch", args=[demo_study.public_token]),
                      {"trial": trial.public_id, "slot": 0, "ended": True, "watched_fraction": 1.0},
                      content_type="application/json")
    assert r.status_code == 404
    assert not Response.objects.filter(trial=trial).exists()


def test_without_a_session_the_api_says_so(demo_study):
    r = Client().post(reverse("answer", args=[demo_study.public_token]), {"trial": "x"}, content_type="application/json")
    assert r.status_code == 403 and r.json()["error"] == "no_session"


def test_trials_must_be_answered_in_order(driver):
    first = to_first_trial(driver)
    later = Trial.objects.filter(participant=driver.participant, page_index=first.page_index + 1).order_by("position").first()
    if later is None:
        later = Trial.objects.filter(participant=driver.participant, position__gt=first.position).order_by("position").first()
    driver.watch_all(first)
    Trial.objects.filter(pk=later.pk).update(first_shown_at=first.first_shown_at)
    r = driver.answer(later, answers=driver.answers_for(later))
    assert r.status_code in (409,)  # not yet shown / not on the current page / out of order
    assert not Response.objects.filter(trial=later).exists()


@pytest.mark.parametrize("body,content_type", [
    (b"{not json", "application/json"),
    (b"[1, 2]", "application/json"),
    (b"trial=x", "application/x-www-form-urlencoded"),
])
def test_malformed_bodies_get_a_clear_400(driver, body, content_type):
    to_first_trial(driver)
    r = driver.client.post(reverse("answer", args=[driver.study.public_token]), body, content_type=content_type)
    assert r.status_code == 400 and r.json()["message"]


def test_missing_csrf_token_is_refused_and_changes_nothing(demo_study):
    browser = Client(enforce_csrf_checks=True)
    browser.get(reverse("entry", args=[demo_study.public_token]))
    r = browser.post(reverse("page_post", args=[demo_study.public_token, 0]), {"agree": "yes"})
    assert r.status_code == 403
    from studies.models import Participant

    assert Participant.objects.get(study=demo_study).page_index == 0
    r = browser.post(reverse("answer", args=[demo_study.public_token]), json.dumps({}), content_type="application/json")
    assert r.status_code == 403


def test_watch_report_validates_its_numbers(driver):
    trial = to_first_trial(driver)
    for bad in ({"watched_fraction": 1.5}, {"seeks": -1}, {"pauses": "3"}, {"ended": "yes"}):
        r = driver.post_json("watch", {"trial": trial.public_id, "slot": 0, **bad})
        assert r.status_code == 400, bad
    r = driver.post_json("watch", {"trial": trial.public_id, "slot": 9, "watched_fraction": 0.5})
    assert r.status_code == 404


def test_counters_never_go_down(driver):
    trial = to_first_trial(driver)
    driver.page()
    driver.post_json("watch", {"trial": trial.public_id, "slot": 0, "seeks": 3, "pauses": 2, "watched_fraction": 0.5})
    driver.post_json("watch", {"trial": trial.public_id, "slot": 0, "seeks": 1, "pauses": 0, "watched_fraction": 0.2})
    w = WatchRecord.objects.get(trial_stimulus__trial=trial, trial_stimulus__slot=0)
    assert (w.seeks, w.pauses, w.watched_fraction) == (3, 2, 0.5)


def test_a_late_report_neither_unsets_ended_nor_moves_its_time(driver):
    trial = to_first_trial(driver)
    driver.pretend_shown(trial)
    ended = {"trial": trial.public_id, "slot": 0, "ended": True, "watched_fraction": 1.0, "replays": 1}
    r = driver.post_json("watch", ended)
    assert r.status_code == 200 and r.json()["ended"] is True
    first = WatchRecord.objects.get(trial_stimulus__trial=trial, trial_stimulus__slot=0)
    assert first.ended and first.ended_at is not None and first.replays == 1
    r = driver.post_json("watch", {"trial": trial.public_id, "slot": 0, "ended": False, "watched_fraction": 0.3,
                                   "replays": 2})
    assert r.status_code == 200 and r.json()["ended"] is True  # it stays ended
    later = WatchRecord.objects.get(pk=first.pk)
    assert (later.ended, later.ended_at, later.watched_fraction, later.replays) == (True, first.ended_at, 1.0, 2)
    assert later.updated_at > first.updated_at


@pytest.mark.parametrize("slot", [-1, 2**31, 2**63, 10**30])
def test_a_slot_outside_any_screen_is_not_found_not_an_error(driver, slot):
    trial = to_first_trial(driver)
    r = driver.post_json("watch", {"trial": trial.public_id, "slot": slot, "watched_fraction": 0.5})
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert not WatchRecord.objects.filter(trial_stimulus__trial=trial).exists()


def test_a_tie_is_exported_with_its_pairs_embodiment_so_the_analysis_counts_it(driver):
    """A tie chooses no side; its row must still carry the pair's embodiment (the analysis groups preferences
    by question x embodiment), or the ties fall out of the win rates."""
    from studies import selectors
    from studies.models import Trial

    driver.start()
    driver.complete()
    trial = Trial.objects.filter(participant=driver.participant, question="preference", kind="rated").first()
    response = trial.responses.get()
    response.choice, response.stimulus, response.value = "tie", None, 0.0
    response.save()
    rows = [r for r in selectors.export_rows(driver.study) if r["trial_position"] == trial.position]
    sides = {s.stimulus.embodiment for s in trial.slots.all()}
    assert len(rows) == 1 and rows[0]["choice"] == "tie" and rows[0]["condition"] == ""
    assert {rows[0]["embodiment"]} == sides
    assert rows[0]["speaker"] == trial.slots.first().stimulus.utterance.speaker
