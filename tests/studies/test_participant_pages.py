"""Participant pages beyond trials: lab links, the A/V check screening out, demographics validation,
resuming mid-study, and no stack trace ever — whatever breaks, the participant sees a friendly page. Also how
a likert scale's labels are shown: the two ends, or one under every point."""
import re

import yaml
from django.test import Client
from django.urls import reverse

from studies import selectors, services
from studies.demo import demo_spec_text
from studies.models import Participant


def test_lab_link_starts_a_lab_session_and_a_seat_code_cannot_be_reused(demo_study):
    browser = Client()
    r = browser.get(reverse("lab_entry", args=[demo_study.lab_token]) + "?id=room2-p07")
    assert r.status_code == 302
    p = Participant.objects.get(study=demo_study)
    assert p.source == "lab" and p.external_id_hash and "room2" not in p.external_id_hash
    Participant.objects.filter(pk=p.pk).update(status="completed")
    again = Client().get(reverse("lab_entry", args=[demo_study.lab_token]) + "?id=room2-p07")
    assert again.status_code == 403 and b"already taken part" in again.content


def test_wrong_digits_twice_screen_the_participant_out(driver):
    driver.start()
    driver.submit_page({"agree": "yes"})
    driver.submit_page({})
    driver.submit_page({"digits": "000"})
    page = driver.page()
    assert b"do not match" in page.content
    assert driver.participant.status == "active"
    driver.submit_page({"digits": "000"})
    assert driver.participant.status == "screened_out"
    assert b"could not continue" in driver.page().content or b"cannot continue" in driver.page().content


def test_consent_is_required(driver):
    driver.start()
    driver.submit_page({})
    assert driver.participant.page_index == 0
    assert b"agree" in driver.page().content


def test_demographics_reject_an_impossible_age_and_keep_the_page(driver):
    driver.start()
    p = driver.participant
    pages = p.version.spec["pages"]
    demo_index = [i for i, page in enumerate(pages) if page["type"] == "demographics"][0]
    Participant.objects.filter(pk=p.pk).update(page_index=demo_index)
    driver.submit_page({"age": "7"})
    assert driver.participant.page_index == demo_index
    driver.submit_page({"age": "34", "gender": "Woman"})
    assert driver.participant.demographics == {"age": 34, "gender": "Woman"}


def test_a_double_submitted_form_is_harmless(driver):
    driver.start()
    driver.submit_page({"agree": "yes"})
    r = driver.client.post(reverse("page_post", args=[driver.study.public_token, 0]), {"agree": "yes"})
    assert r.status_code == 302 and driver.participant.page_index == 1


def test_reload_mid_trial_shows_the_same_trial(driver):
    driver.start()
    driver.submit_page({"agree": "yes"})
    driver.submit_page({})
    digits = selectors.av_check_stimulus(driver.participant.version.spec).expected_answer["digits"]
    driver.submit_page({"digits": digits})
    first = driver.page()
    second = driver.page()
    trial = driver.current_trial()
    assert trial.public_id.encode() in first.content and trial.public_id.encode() in second.content


def test_an_unexpected_error_shows_a_friendly_page_not_a_trace(driver, monkeypatch, settings):
    settings.DEBUG = True  # even in development
    driver.start()

    def boom(participant):
        raise RuntimeError("secret internals: ground_truth utt01")

    monkeypatch.setattr(selectors, "position", boom)
    client = driver.client
    client.raise_request_exception = False
    r = client.get(reverse("take", args=[driver.study.public_token]))
    assert r.status_code == 500
    assert b"Something went wrong" in r.content
    assert b"Traceback" not in r.content and b"secret internals" not in r.content


def test_an_unexpected_api_error_is_json_without_a_trace(driver, monkeypatch):
    driver.start()
    from studies import services

    monkeypatch.setattr(services, "watch_record", lambda **kw: 1 / 0)
    driver.client.raise_request_exception = False
    r = driver.post_json("watch", {"trial": "x", "slot": 0})
    assert r.status_code == 500 and r.json()["error"] == "server_error"
    assert b"ZeroDivision" not in r.content


def test_participant_pages_may_be_framed_by_mturk_only_and_researcher_pages_not_at_all(driver, admin_client):
    driver.start()
    r = driver.page()
    assert "X-Frame-Options" not in r
    policy = dict(d.strip().split(" ", 1) for d in r["Content-Security-Policy"].split(";"))
    assert policy["frame-ancestors"] == "'self' https://worker.mturk.com https://workersandbox.mturk.com"
    researcher = admin_client.get(reverse("study_list"))
    assert researcher["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in researcher["Content-Security-Policy"]


def test_a_browser_that_drops_the_cookie_in_a_frame_is_offered_a_new_tab(demo_study):
    query = "?assignmentId=A9&hitId=H9&workerId=W9&turkSubmitTo=https%3A%2F%2Fworkersandbox.mturk.com"
    browser = Client()
    r = browser.get(reverse("entry", args=[demo_study.public_token]) + query)
    cookieless = Client()  # what a browser that refuses third-party cookies sends next: no session
    page = cookieless.get(r["Location"])
    assert page.status_code == 404 and b"Open the study in a new tab" in page.content
    assert b"workerId=W9" in page.content and b"assignmentId=A9" in page.content
    assert Participant.objects.filter(study=demo_study).count() == 1
    cookieless.get(reverse("entry", args=[demo_study.public_token]) + query)
    assert Participant.objects.filter(study=demo_study).count() == 1  # the same worker resumes


def test_a_worker_resuming_under_a_new_assignment_submits_that_assignment(demo_study):
    entry = reverse("entry", args=[demo_study.public_token])
    Client().get(entry + "?assignmentId=OLD&hitId=H1&workerId=W1&turkSubmitTo=https%3A%2F%2Fworkersandbox.mturk.com")
    Client().get(entry + "?assignmentId=NEW&hitId=H2&workerId=W1&turkSubmitTo=https%3A%2F%2Fworkersandbox.mturk.com")
    p = Participant.objects.get(study=demo_study)
    assert p.external_session["assignment_id"] == "NEW" and p.external_session["hit_id"] == "H2"


def test_a_screened_out_mturk_worker_can_submit_the_hit_with_the_screened_out_code(demo_study):
    from tests.conftest import ParticipantDriver

    browser = Client()
    browser.get(reverse("entry", args=[demo_study.public_token])
                + "?assignmentId=A1&hitId=H1&workerId=W1&turkSubmitTo=https%3A%2F%2Fworkersandbox.mturk.com")
    d = ParticipantDriver(browser, demo_study)
    d.submit_page({"agree": "yes"})
    d.submit_page({})
    d.submit_page({"digits": "000"})
    d.submit_page({"digits": "000"})
    page = d.page().content.decode()
    assert d.participant.status == "screened_out"
    assert 'action="https://workersandbox.mturk.com/mturk/externalSubmit"' in page
    assert f'value="{demo_study.screened_out_code}"' in page and 'value="A1"' in page


def test_a_browser_that_finished_cannot_start_again_through_the_plain_link(driver):
    driver.start()
    driver.complete()
    first = driver.participant
    r = driver.start()
    assert r.status_code == 302
    page = driver.page()
    assert first.completion_code.encode() in page.content
    assert Participant.objects.filter(study=driver.study).count() == 1


def _likert_study(labels: list[str], slug: str):
    """The quick demo's likert question with these labels, on a study that opens on its trials page."""
    spec = yaml.safe_load(demo_spec_text(quick=True))
    spec["slug"] = slug
    spec["questions"] = {"naturalness": {**spec["questions"]["naturalness"], "labels": labels}}
    spec["pages"] = [{"type": "trials", "question": "naturalness", "attention_checks": 0}, {"type": "completion"}]
    version, _ = services.study_load(text=yaml.safe_dump(spec, sort_keys=False))
    services.study_set_status(study=version.study, status="live")
    return version.study


def _scales(html: str) -> list[str]:
    return re.findall(r'<fieldset class="likert".*?</fieldset>', html, re.S)


def _points(scale: str) -> list[tuple[str, str]]:
    """(value, label) of every point of one scale, in page order ("" for a point without a label)."""
    found = re.findall(r'<label class="point"><input[^>]*value="(\d+)"[^>]*><span>(\d+)'
                       r'(?: <small class="point-label">([^<]*)</small>)?</span></label>', scale)
    assert all(value == shown for value, shown, _ in found)
    return [(value, label) for value, _, label in found]


def test_a_likert_scale_with_a_label_per_point_shows_each_under_its_point(db):
    labels = ["Very unnatural", "Unnatural", "Somewhat unnatural", "Neither", "Somewhat natural", "Natural",
              "Very natural"]
    study = _likert_study(labels, "per-point-labels")
    browser = Client()
    browser.get(reverse("entry", args=[study.public_token]))
    html = browser.get(reverse("take", args=[study.public_token])).content.decode()
    scales = _scales(html)
    assert len(scales) == 2  # one per item
    for scale in scales:
        assert _points(scale) == [(str(i), label) for i, label in enumerate(labels, start=1)]
        assert '<div class="points labelled">' in scale
        assert 'class="ends"' not in scale  # the end labels are already under the first and last points


def test_a_likert_scale_with_two_labels_shows_them_at_its_ends_and_an_empty_label_leaves_a_point_bare(db):
    ends = _likert_study(["Very unnatural", "Very natural"], "end-labels")
    browser = Client()
    browser.get(reverse("entry", args=[ends.public_token]))
    scale = _scales(browser.get(reverse("take", args=[ends.public_token])).content.decode())[0]
    assert _points(scale) == [(str(i), "") for i in range(1, 8)] and '<div class="points">' in scale
    assert '<div class="ends"><span>Very unnatural</span><span>Very natural</span></div>' in scale

    some = _likert_study(["Very unnatural", "", "", "Neither", "", "", "Very natural"], "some-labels")
    browser = Client()
    browser.get(reverse("entry", args=[some.public_token]))
    scale = _scales(browser.get(reverse("take", args=[some.public_token])).content.decode())[0]
    assert _points(scale) == [("1", "Very unnatural"), ("2", ""), ("3", ""), ("4", "Neither"), ("5", ""), ("6", ""),
                              ("7", "Very natural")]
    assert 'class="ends"' not in scale
