"""The open reference of a MUSHRA (slider) screen, as ITU-R BS.1534 has it: the quick demo's slider question
names `reference: ground_truth`, so every slider screen shows that clip labelled "Reference" above the rated
videos. It is served like any stimulus but under a token of its own (never the hidden reference's), may be
played or not (its plays are recorded), cannot be rated, and the quality rules, exports and the dashboard
leave it out."""
import re

from django.test import Client
from django.urls import reverse

from studies import selectors
from studies.models import Exclusion, Participant, Stimulus, Trial, TrialStimulus, WatchRecord

VIDEO_SRC = re.compile(r'<video class="stimulus" src="/v/([A-Za-z0-9_-]+)\.mp4"')
REFERENCE_FIGURE = re.compile(r'<figure class="video-slot open-reference".*?</figure>', re.S)


def slider_page_index(participant) -> int:
    pages = participant.version.spec["pages"]
    questions = participant.version.spec["questions"]
    return next(i for i, p in enumerate(pages)
                if p["type"] == "trials" and questions[p["question"]]["type"] == "slider")


def to_slider_trial(driver) -> Trial:
    """Start a session and put it on the slider page (its earlier pages play no part here)."""
    driver.start()
    Participant.objects.filter(pk=driver.participant.pk).update(page_index=slider_page_index(driver.participant))
    return driver.current_trial()


def test_a_slider_screen_shows_the_reference_labelled_under_its_own_token_and_without_a_slider(driver):
    trial = to_slider_trial(driver)
    html = driver.page().content.decode()
    reference = trial.slots.get(role=TrialStimulus.Role.REFERENCE)
    hidden = trial.slots.get(role=TrialStimulus.Role.HIDDEN_REFERENCE)
    rated = list(trial.slots.exclude(role=TrialStimulus.Role.REFERENCE))
    assert reference.stimulus_id == hidden.stimulus_id and reference.slot == len(rated) == 3

    figures = REFERENCE_FIGURE.findall(html)
    assert len(figures) == 1 and "<figcaption>Reference</figcaption>" in figures[0]
    assert VIDEO_SRC.findall(figures[0]) == [reference.token]
    assert html.index(figures[0]) < html.index('<div class="videos n3">'), "the reference comes first"
    # Every video on the page: the reference's URL is none of the rated ones, nor any stimulus's own.
    srcs = VIDEO_SRC.findall(html)
    assert sorted(srcs) == sorted([s.stimulus.token for s in rated] + [reference.token])
    assert srcs.count(reference.token) == 1 and hidden.stimulus.token in srcs
    assert not Stimulus.objects.filter(token=reference.token).exists()
    # Only the rated videos get a slider.
    assert sorted(int(s) for s in re.findall(r'class="answer slider"[^>]*data-slot="(\d+)"', html)) == [0, 1, 2]
    assert "Compare them with the reference" in html

    # The reference plays from its own URL: the same video as the hidden reference.
    got = driver.client.get(reverse("stimulus_video", args=[reference.token]))
    assert got.status_code == 200
    expected = driver.client.get(reverse("stimulus_video", args=[hidden.stimulus.token]))
    assert b"".join(got.streaming_content) == b"".join(expected.streaming_content)


def test_each_trials_reference_has_a_token_of_its_own_that_only_its_session_may_fetch(driver, demo_study):
    driver.start()
    references = TrialStimulus.objects.filter(trial__participant=driver.participant, role=TrialStimulus.Role.REFERENCE)
    tokens = [r.token for r in references]
    # one per slider screen: the demo's slider page rates its 3 utterances
    assert len(tokens) == 3 and len(set(tokens)) == 3 and all(tokens)

    other = type(driver)(Client(), demo_study)
    other.start()
    others = set(TrialStimulus.objects.filter(trial__participant=other.participant, role=TrialStimulus.Role.REFERENCE)
                 .values_list("token", flat=True))
    assert not others & set(tokens)
    for token in tokens:
        assert other.client.get(reverse("stimulus_video", args=[token])).status_code == 404
        assert Client().get(reverse("stimulus_video", args=[token])).status_code == 404
        assert driver.client.get(reverse("stimulus_video", args=[token]), HTTP_RANGE="bytes=0-9").status_code == 206


def test_the_answers_need_only_the_rated_videos_watched_and_a_reference_play_is_recorded(driver):
    trial = to_slider_trial(driver)
    driver.page()
    driver.watch_all(trial, references=False)
    reference = trial.slots.get(role=TrialStimulus.Role.REFERENCE)
    assert not WatchRecord.objects.filter(trial_stimulus=reference).exists()
    r = driver.answer(trial)
    assert r.status_code == 201, r.content

    second = driver.current_trial()
    assert second.question == trial.question and second.pk != trial.pk
    driver.page()
    driver.watch_all(second)  # this time the participant plays the reference too
    played = WatchRecord.objects.get(trial_stimulus__trial=second, trial_stimulus__role=TrialStimulus.Role.REFERENCE)
    assert played.ended and played.watched_fraction == 1.0
    assert driver.answer(second).status_code == 201


def test_a_rated_video_left_unplayed_still_locks_the_answers(driver):
    trial = to_slider_trial(driver)
    driver.page()
    driver.watch_all(trial)  # the reference and every rated video...
    WatchRecord.objects.filter(trial_stimulus__trial=trial, trial_stimulus__role=TrialStimulus.Role.ANCHOR).delete()
    r = driver.answer(trial)  # ...but the anchor's report is gone
    assert r.status_code == 409 and r.json()["error"] == "not_watched"


def test_the_reference_cannot_be_rated(driver):
    trial = to_slider_trial(driver)
    driver.page()
    driver.watch_all(trial)
    reference = trial.slots.get(role=TrialStimulus.Role.REFERENCE)
    answers = driver.answers_for(trial)
    with_reference = answers + [{"item": answers[0]["item"], "slot": reference.slot, "value": 100}]
    r = driver.answer(trial, with_reference)
    assert r.status_code == 400 and r.json()["error"] == "incomplete"
    instead = [dict(a, slot=reference.slot) if a["slot"] == 0 else a for a in answers]
    r = driver.answer(trial, instead)
    assert r.status_code == 400 and r.json()["error"] == "incomplete"
    assert not trial.responses.exists()


def test_quality_rules_exports_and_the_dashboard_leave_the_reference_out(driver, demo_study):
    driver.start()
    driver.complete(references=False)  # a participant who never played a reference
    participant = driver.participant
    assert participant.status == Participant.Status.COMPLETED
    assert not Exclusion.objects.filter(participant=participant).exists(), "excluded for an unplayed reference"

    rows = [r for r in selectors.export_rows(demo_study) if r["question_type"] == "slider"]
    reference_slots = set(TrialStimulus.objects.filter(trial__participant=participant, role="reference")
                          .values_list("slot", flat=True))
    assert len(rows) == 9 and reference_slots == {3}
    assert {r["slot"] for r in rows} == {0, 1, 2}
    assert "reference" not in {r["role"] for r in rows}
    assert sorted(r["condition"] for r in rows) == sorted(["ground_truth", "random_alignment", "still"] * 3)
    assert all(r["watched_fraction"] == 1.0 for r in rows)

    # Each condition was rated as often as the others (likert 1, slider 3, pairwise 2): the reference adds none.
    per_condition = selectors.dashboard(demo_study)["per_condition"]
    counts = {(c["condition"], c["embodiment"]): (c["valid"], c["all"]) for c in per_condition}
    assert counts == {(c, "avatar"): (6, 6) for c in ("ground_truth", "random_alignment", "still")}
