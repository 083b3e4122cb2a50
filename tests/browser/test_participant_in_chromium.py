"""A participant in real Chromium: the whole quick demo study through the live server, with every video
really played to its end (nothing fakes `ended`), every question type answered the way a person would
(radio points, sliders moved with the keyboard, A/B/tie), the attention check obeyed and the completion
code read off the last page. The MUSHRA screens show the open reference labelled, under a URL of its own: it
is played on the first of them and left alone on the others, whose answers unlock all the same. Afterwards
the database must hold exactly those answers and a finished watch record for every rated video (and the
played reference), and nothing the browser requested or received may name a condition, utterance or corpus.
A second test takes one likert trial with the keyboard alone; a third checks that likert labels given one
per point sit with their points, without overflowing, at desktop, tablet and phone widths.

Screenshots of every page type at desktop and phone sizes go to $SCREENSHOT_DIR (default: a pytest
temporary folder)."""
from __future__ import annotations

import re
import time
from urllib.parse import unquote, urlsplit

import pytest

from studies import selectors
from studies.models import (
    Condition, Exclusion, Participant, Response, Stimulus, Trial, TrialStimulus, Utterance, WatchRecord,
)

# The live server answers from its own thread, so the database must be committed to (transaction=True).
# Resetting sequences gives every test the same primary keys, hence the same placeholder seeds, so the
# demo clips come from the render cache instead of being rendered again after each flush.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True, reset_sequences=True)]

VIDEO_PATH = re.compile(r"^/v/([A-Za-z0-9_-]{16,64})\.mp4$")
THINKING_S = 1.2  # a person takes a moment after the answers unlock; faster counts as speeding in QC
ANSWERS_ENABLED = "() => [...document.querySelectorAll('#trial .answer')].every(el => !el.disabled)"
ANY_ANSWER_ENABLED = "() => [...document.querySelectorAll('#trial .answer')].some(el => !el.disabled)"
# A snapshot taken while the slot's video is visibly mid-playback; false until then.
MID_PLAYBACK = """(slot) => {
  const v = document.querySelector(`#trial video.stimulus[data-slot="${slot}"]`);
  if (v.paused || v.ended || !(v.currentTime > 0.05)) return false;
  return {time: v.currentTime, duration: v.duration,
          enabled: [...document.querySelectorAll('#trial .answer')].filter(el => !el.disabled).length,
          next: !document.getElementById('next').disabled};
}"""


def _participant(study) -> Participant:
    return Participant.objects.select_related("version").get(study=study)


def _submit(page, selector: str) -> None:
    with page.expect_navigation():
        page.click(selector)


def _play_native_video_to_end(page, selector: str) -> None:
    """A video with the browser's own controls: click it to start, as a person would, and let it finish."""
    page.locator(selector).scroll_into_view_if_needed()
    page.click(selector)
    outcome = page.wait_for_function(
        "(sel) => { const v = document.querySelector(sel);"
        " return v.error ? `media error ${v.error.code}` : (v.ended ? 'ended' : false); }",
        arg=selector, timeout=30_000,
    ).json_value()
    assert outcome == "ended", (f"{page.get_attribute(selector, 'src')} did not play: {outcome} "
                                "(4 = not a playable video: the server refused it or sent something else)")


def _play_slot_to_end(page, slot: int, *, last: bool) -> None:
    """Press the slot's Play button, check the answers stay locked while it plays, wait for its end (its facts
    go to the server with the answer, which checks them there)."""
    page.click(f"#trial button.play[data-slot='{slot}']")
    during = page.wait_for_function(MID_PLAYBACK, arg=slot).json_value()
    assert during["enabled"] == 0 and not during["next"], f"answers unlocked mid-playback: {during}"
    page.wait_for_function(
        "(slot) => document.querySelector(`#trial video.stimulus[data-slot=\"${slot}\"]`).ended",
        arg=slot, timeout=30_000,
    )
    if not last:
        assert not page.evaluate(ANY_ANSWER_ENABLED), "answers unlocked before every video was played"


def _give_likert(page, question: dict, trial: Trial, *, attention: bool) -> dict:
    chosen = {}
    for n, item in enumerate(question["items"]):
        value = 1 if attention else 2 + (trial.position + n) % (question["points"] - 2)
        page.click(f"#trial fieldset.likert[data-item='{item['key']}'] label.point:has(input[value='{value}'])")
        assert page.is_checked(f"#trial fieldset.likert[data-item='{item['key']}'] input[value='{value}']")
        chosen[(item["key"], 0)] = float(value)
    return chosen


def _give_sliders(page, trial: Trial, *, attention: bool) -> dict:
    """Move every slider with the keyboard: the hidden reference to the top, the anchor near the bottom."""
    roles = dict(trial.slots.values_list("slot", "role"))
    chosen = {}
    for handle in page.query_selector_all("#trial input.slider"):
        slot, item = int(handle.get_attribute("data-slot")), handle.get_attribute("data-item")
        if attention:
            keys = ["Home"]
        elif roles[slot] == TrialStimulus.Role.HIDDEN_REFERENCE:
            keys = ["End"]
        elif roles[slot] == TrialStimulus.Role.ANCHOR:
            keys = ["Home", "PageUp"]
        else:
            keys = ["PageUp", "PageUp"] + ["ArrowRight"] * (slot + 1)
        handle.focus()
        for key in keys:
            page.keyboard.press(key)
        value = int(handle.input_value())
        assert value != 50 or keys == ["Home"], f"slider {slot}/{item} did not move"
        assert page.text_content(f"#o-{slot}-{item}") == str(value), "the slider's shown value lags behind"
        chosen[(item, slot)] = float(value)
    return chosen


def _give_pairwise(page, question: dict, trial: Trial) -> dict:
    chosen = {}
    options = ["A", "B", "tie"] if question.get("allow_tie") else ["A", "B"]
    for n, item in enumerate(question["items"]):
        choice = options[(trial.position + n) % len(options)]
        page.click(f"#trial fieldset.pairwise[data-item='{item['key']}'] "
                   f"label.point:has(input[value^='{choice}'])")
        chosen[(item["key"], 0)] = choice
    return chosen


def _take_trial(page, participant: Participant, shots, shot_kinds: set) -> tuple[Trial, dict]:
    """One trial as a person takes it; returns the trial and the answers given, keyed (item, slot)."""
    root = page.locator("#trial")
    trial = Trial.objects.get(public_id=root.get_attribute("data-trial"), participant=participant)
    assert trial.answered_at is None and trial.page_index == participant.page_index
    question = participant.version.spec["questions"][trial.question]
    qtype = root.get_attribute("data-qtype")
    assert qtype == question["type"]
    # The attention check is recognised the way the clip tells a person: by what it is, not by its position.
    attention = trial.slots.filter(stimulus__condition__kind=Condition.Kind.ATTENTION_CHECK).exists()
    assert attention == (trial.kind == Trial.Kind.ATTENTION)
    label = f"{trial.kind}-{qtype}"

    slots = [int(s) for s in page.eval_on_selector_all("#trial .videos:not(.references) video.stimulus",
                                                       "vs => vs.map(v => v.dataset.slot)")]
    references = [int(s) for s in page.eval_on_selector_all("#trial .open-reference video.stimulus",
                                                            "vs => vs.map(v => v.dataset.slot)")]
    rated = trial.slots.exclude(role=TrialStimulus.Role.REFERENCE)
    assert sorted(slots) == sorted(rated.values_list("slot", flat=True))
    assert references == list(trial.slots.filter(role=TrialStimulus.Role.REFERENCE).values_list("slot", flat=True))
    assert bool(references) == (qtype == "slider" and bool(question.get("reference")))
    if references:
        assert page.text_content("#trial .open-reference figcaption").strip() == "Reference"
        assert page.locator("#trial .open-reference input").count() == 0, "the open reference is not rated"
        reference_src = page.get_attribute("#trial .open-reference video", "src")
        rated_srcs = page.eval_on_selector_all("#trial .videos:not(.references) video", "vs => vs.map(v => v.src)")
        assert urlsplit(reference_src).path not in {urlsplit(u).path for u in rated_srcs}
    assert page.locator("#trial .answer").count() > 0
    assert not page.evaluate(ANY_ANSWER_ENABLED) and page.is_disabled("#next"), "answers open before any playback"
    if label not in shot_kinds:
        shots.take(page, f"{label}-before-playing")

    # The reference is the participant's to play: played first on the first MUSHRA screen (the answers stay
    # locked after it), never on the later ones (the rated videos alone unlock them).
    play_references = label not in shot_kinds
    for slot in references if play_references else []:
        _play_slot_to_end(page, slot, last=False)
    for n, slot in enumerate(slots):
        _play_slot_to_end(page, slot, last=n == len(slots) - 1)
    page.wait_for_function(ANSWERS_ENABLED)
    unlocked = time.monotonic()
    assert page.is_disabled("#next"), "Next must wait for an answer to every question"

    if qtype == "likert":
        chosen = _give_likert(page, question, trial, attention=attention)
    elif qtype == "slider":
        chosen = _give_sliders(page, trial, attention=attention)
    else:
        chosen = _give_pairwise(page, question, trial)
    assert page.is_enabled("#next")
    if label not in shot_kinds:
        shots.take(page, f"{label}-answered")
        shot_kinds.add(label)

    page.wait_for_timeout(max(0.0, THINKING_S - (time.monotonic() - unlocked)) * 1000)
    answer_url = urlsplit(root.get_attribute("data-answer-url")).path
    with page.expect_navigation():
        with page.expect_response(lambda r: r.url.endswith(answer_url)) as answered:
            page.click("#next")
    assert answered.value.status == 201, answered.value.text()
    return trial, chosen


def _forbidden_names(study) -> set[str]:
    """Every name that would tell a participant (or their browser) what a video is."""
    corpus = study.current_version.spec["stimuli"]["corpus"]
    names = {corpus}
    names |= set(Condition.objects.values_list("name", flat=True))
    names |= set(Condition.objects.values_list("kind", flat=True))
    names |= set(Utterance.objects.filter(corpus__name=corpus).values_list("name", flat=True))
    names |= set(Utterance.objects.filter(corpus__name=corpus).values_list("speaker", flat=True))
    return {n.lower() for n in names if n}


def test_a_participant_completes_the_quick_demo_study_in_chromium(live_server, demo_study, browser_page, screenshots):
    page = browser_page
    shots = screenshots("walkthrough")
    requested: list[str] = []
    video_responses = []
    page.on("request", lambda r: requested.append(r.url))
    page.on("response", lambda r: video_responses.append(r) if VIDEO_PATH.match(urlsplit(r.url).path) else None)

    page.goto(f"{live_server.url}/s/{demo_study.public_token}/")
    participant = _participant(demo_study)
    spec = participant.version.spec
    given: dict[int, dict] = {}
    shot_kinds: set[str] = set()
    seen_pages: list[int] = []

    for _ in range(100):
        participant.refresh_from_db()
        page_spec = selectors.current_page(participant)
        kind = page_spec["type"]
        if not seen_pages or seen_pages[-1] != participant.page_index:
            seen_pages.append(participant.page_index)
        if kind == "completion":
            break
        if kind == "consent":
            shots.take(page, "consent")
            page.check("input[name=agree]")
            _submit(page, "form button[type=submit]")
        elif kind == "instructions":
            shots.take(page, "instructions")
            _submit(page, "form button[type=submit]")
        elif kind == "av_check":
            av = selectors.av_check_stimulus(spec)
            assert urlsplit(page.get_attribute("video.stimulus", "src")).path == f"/v/{av.token}.mp4"
            page.wait_for_function("() => { const v = document.querySelector('video.stimulus');"
                                   " return v.readyState >= 2 || v.error; }")
            shots.take(page, "av-check")
            _play_native_video_to_end(page, "video.stimulus")
            page.fill("#digits", av.expected_answer["digits"])  # what a person hears in the clip
            _submit(page, "form button[type=submit]")
        elif kind in ("training", "trials"):
            trial, chosen = _take_trial(page, participant, shots, shot_kinds)
            given[trial.pk] = chosen
        elif kind == "demographics":
            shots.take(page, "demographics")
            for field in page_spec["fields"]:
                if field == "gender":
                    page.select_option("#f-gender", "Woman")
                else:
                    page.fill(f"#f-{field}", "34" if field == "age" else "English")
            _submit(page, "form button[type=submit]")
        else:
            pytest.fail(f"unexpected page type {kind!r}")
        if page.locator("p.error[role=alert]:not([hidden])").count():
            pytest.fail(f"the {kind} page said: {page.text_content('p.error[role=alert]:not([hidden])')}")
    else:
        pytest.fail("the study never reached its completion page")

    shots.take(page, "completion")
    participant.refresh_from_db()
    assert seen_pages == list(range(len(spec["pages"]))), "pages were skipped or went back"
    assert participant.status == Participant.Status.COMPLETED
    assert page.text_content("#completion-code").strip() == participant.completion_code != ""

    # Every trial answered, with exactly the answers given on screen.
    trials = list(Trial.objects.filter(participant=participant).order_by("position"))
    assert trials and all(t.answered_at is not None for t in trials)
    assert set(given) == {t.pk for t in trials}
    kinds = {(t.kind, spec["questions"][t.question]["type"]) for t in trials}
    assert {("training", "likert"), ("rated", "likert"), ("attention", "likert"), ("rated", "slider"),
            ("rated", "pairwise")} <= kinds
    for t in trials:
        saved = {}
        for r in Response.objects.filter(trial=t):
            saved[(r.item, r.slot)] = r.choice if spec["questions"][t.question]["type"] == "pairwise" else r.value
        assert saved == given[t.pk], f"trial {t.position}: saved {saved}, given {given[t.pk]}"

    # Every rated video of every trial really played to its end, and the one open reference played.
    slots = TrialStimulus.objects.filter(trial__participant=participant)
    rated_slots = slots.exclude(role=TrialStimulus.Role.REFERENCE)
    reference_slots = slots.filter(role=TrialStimulus.Role.REFERENCE)
    assert reference_slots.count() == 3  # one per MUSHRA screen of the quick demo
    records = WatchRecord.objects.filter(trial_stimulus__in=slots)
    assert records.filter(trial_stimulus__in=rated_slots).count() == rated_slots.count()
    played_references = set(records.filter(trial_stimulus__in=reference_slots).values_list("trial_stimulus__token",
                                                                                         flat=True))
    assert len(played_references) == 1
    for record in records:
        assert record.ended and record.ended_at is not None
        assert record.watched_fraction >= 0.95, record.watched_fraction
        assert record.playback_errors == 0
    assert participant.demographics.get("gender") == "Woman"
    assert not Exclusion.objects.filter(participant=participant).exists(), "an honest participant was excluded"

    # The browser learned nothing about what it was shown: opaque tokens in URLs, bare headers.
    forbidden = _forbidden_names(demo_study)
    for url in requested:
        text = unquote(url).lower()
        assert not [n for n in forbidden if n in text], f"{url} names {[n for n in forbidden if n in text]}"
    video_paths = [urlsplit(u).path for u in requested if urlsplit(u).path.startswith("/v/")]
    tokens_used = {VIDEO_PATH.match(p).group(1) for p in video_paths}
    own_tokens = set(rated_slots.values_list("stimulus__token", flat=True))
    reference_tokens = set(reference_slots.values_list("token", flat=True))
    assert own_tokens <= tokens_used, "a trial's video was never fetched"
    assert played_references <= tokens_used
    assert tokens_used <= own_tokens | reference_tokens | {selectors.av_check_stimulus(spec).token}
    stimulus_tokens = tokens_used - reference_tokens
    assert Stimulus.objects.filter(token__in=stimulus_tokens).count() == len(stimulus_tokens)
    assert not Stimulus.objects.filter(token__in=reference_tokens).exists(), "a reference's URL is a stimulus's"
    assert video_responses, "no video response was seen"
    assert any(r.status == 206 for r in video_responses), "Chromium never got a byte range"
    for response in video_responses:
        assert response.status in (200, 206), (response.url, response.status)
        headers = response.all_headers()
        assert headers["content-type"] == "video/mp4"
        leaked = [(k, v) for k, v in headers.items() for n in forbidden if n in f"{k}: {v}".lower()]
        assert not leaked, f"video response headers name what the video is: {leaked}"


def test_a_likert_trial_works_with_the_keyboard_alone(live_server, demo_study, browser_page, screenshots):
    page = browser_page
    shots = screenshots("keyboard")
    page.goto(f"{live_server.url}/s/{demo_study.public_token}/")
    participant = _participant(demo_study)
    page.check("input[name=agree]")
    _submit(page, "form button[type=submit]")
    _submit(page, "form button[type=submit]")  # instructions
    page.fill("#digits", selectors.av_check_stimulus(participant.version.spec).expected_answer["digits"])
    _submit(page, "form button[type=submit]")
    assert page.locator("#trial[data-qtype=likert]").count() == 1, "the first trial should be a likert one"
    trial = Trial.objects.get(public_id=page.get_attribute("#trial", "data-trial"))
    items = [i["key"] for i in participant.version.spec["questions"][trial.question]["items"]]
    assert len(items) == 2

    def focused() -> str:
        return page.evaluate("""() => { const el = document.activeElement;
            return el.id || (el.classList.contains('play') ? 'play' : `${el.name}=${el.value}`); }""")

    page.keyboard.press("Tab")
    assert focused() == "play"
    assert not page.evaluate(ANY_ANSWER_ENABLED)
    page.keyboard.press("Enter")
    during = page.wait_for_function(MID_PLAYBACK, arg=int(page.get_attribute("#trial video.stimulus", "data-slot")))
    assert during.json_value()["enabled"] == 0, "answers open while the video plays"
    page.wait_for_function(ANSWERS_ENABLED, timeout=30_000)
    assert page.evaluate("() => document.querySelector('#trial video.stimulus').ended")

    # The page moves focus to the first answer when the answers unlock.
    assert focused() == f"{items[0]}=1"
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    assert focused() == f"{items[0]}=4" and page.is_checked(f"input[name={items[0]}][value='4']")
    page.keyboard.press("Tab")
    assert focused() == f"{items[1]}=1"
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert page.is_checked(f"input[name={items[1]}][value='3']")
    shots.take(page, "keyboard-focus-on-a-point")
    page.keyboard.press("Tab")
    assert focused() == "next" and page.is_enabled("#next")
    page.wait_for_timeout(THINKING_S * 1000)
    with page.expect_navigation():
        page.keyboard.press("Enter")

    trial.refresh_from_db()
    assert trial.answered_at is not None
    assert dict(Response.objects.filter(trial=trial).values_list("item", "value")) == {items[0]: 4.0, items[1]: 3.0}


NEXT_FRAME = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"
# Where each point and its label sit, and whether anything spills out of its box or off the page.
POINT_GEOMETRY = """() => {
  const box = el => {
    const r = el.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, bottom: r.bottom};
  };
  const scale = document.querySelector('#trial fieldset.likert .points');
  return {
    pageOverflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
    scale: box(scale),
    points: [...scale.querySelectorAll('label.point')].map(point => {
      const face = point.querySelector('span'), label = point.querySelector('.point-label');
      const number = document.createRange(); number.selectNodeContents(face.firstChild);
      return {point: box(point), face: box(face), number: box(number),
              label: label && box(label), text: label && label.textContent,
              spills: face.scrollWidth - face.clientWidth + (label ? label.scrollWidth - label.clientWidth : 0)};
    }),
  };
}"""


def _likert_study_with_labels(slug: str, labels: list[str]):
    """A study that opens on a likert trial whose `len(labels)` points each carry their label."""
    import yaml

    from studies import services
    from studies.demo import demo_spec_text

    spec = yaml.safe_load(demo_spec_text(quick=True))
    spec["slug"] = slug
    spec["questions"] = {"naturalness": {**spec["questions"]["naturalness"], "points": len(labels), "labels": labels}}
    spec["pages"] = [{"type": "trials", "question": "naturalness", "attention_checks": 0}, {"type": "completion"}]
    version, _ = services.study_load(text=yaml.safe_dump(spec, sort_keys=False))
    services.study_set_status(study=version.study, status="live")
    return version.study


@pytest.mark.parametrize("labels", [
    ["Very unnatural", "Unnatural", "Somewhat unnatural", "Neither natural nor unnatural", "Somewhat natural",
     "Natural", "Very natural"],
    ["Not at all", "Hardly", "Barely", "Slightly", "Somewhat", "Moderately", "Fairly", "Considerably", "Very",
     "Extremely", "Completely and unmistakably"],
], ids=["7-points", "11-points"])
def test_likert_labels_given_per_point_sit_with_their_points_at_every_width(live_server, demo_study, browser_page,
                                                                         screenshots, labels):
    from tests.browser.conftest import DESKTOP, PHONE

    page = browser_page
    shots = screenshots(f"likert-labels-{len(labels)}")
    study = _likert_study_with_labels(f"likert-labels-{len(labels)}", labels)
    page.goto(f"{live_server.url}/s/{study.public_token}/")
    assert page.locator("#trial[data-qtype=likert]").count() == 1
    shots.take(page, "labelled-scale")
    for name, size in (("desktop", DESKTOP), ("tablet", {"width": 768, "height": 1024}), ("phone", PHONE),
                       ("small phone", {"width": 320, "height": 640})):
        page.set_viewport_size(size)
        page.evaluate(NEXT_FRAME)  # the page's resize handler has run by then
        g = page.evaluate(POINT_GEOMETRY)
        assert g["pageOverflow"] <= 0, f"{name}: the page scrolls sideways by {g['pageOverflow']} px"
        assert [p["text"] for p in g["points"]] == labels, f"{name}: a label is missing or out of order"
        in_a_row = len({round(p["point"]["top"]) for p in g["points"]}) == 1
        for n, p in enumerate(g["points"], start=1):
            assert p["spills"] <= 0, f"{name}: point {n}'s label does not fit in it"
            inside = g["scale"]["left"] - 0.5 <= p["point"]["left"] and p["point"]["right"] <= g["scale"]["right"] + 0.5
            assert inside, f"{name}: point {n} sticks out of the scale"
            assert p["face"]["left"] - 0.5 <= p["label"]["left"] and p["label"]["right"] <= p["face"]["right"] + 0.5
            if in_a_row:  # side by side: each label under its own number
                assert p["label"]["top"] >= p["number"]["bottom"] - 0.5, f"{name}: point {n}'s label is not under it"
            else:  # one point per row: the label beside its number, the points in order down the page
                assert p["label"]["left"] >= p["number"]["right"], f"{name}: point {n}'s label is not beside it"
        if not in_a_row:
            tops = [p["point"]["top"] for p in g["points"]]
            assert tops == sorted(tops) and len(set(map(round, tops))) == len(tops), f"{name}: points overlap"
        # Side by side where every word fits its point (seven points on a desktop do); else one per row (a phone
        # has no room for seven points' words).
        if name == "desktop" and len(labels) == 7:
            assert in_a_row, "seven labelled points fit side by side on a desktop"
        if "phone" in name:
            assert not in_a_row, f"{name}: the labelled points should be listed one per row"
