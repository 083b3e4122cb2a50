"""Running a study on Prolific: the URL and codes the researcher pastes into Prolific, the hourly pay
check, and the participant's path from Prolific's link: a keyed hash instead of the Prolific id, the
completion code and the link back, the screened-out code, and one session per person."""
from __future__ import annotations

import hashlib
import hmac
import io
from decimal import Decimal

import pytest
from django.apps import apps
from django.conf import settings
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.test import Client

from studies import selectors, services
from studies.demo import demo_spec_text
from studies.models import Participant
from studies.recruiting import prolific
from tests.conftest import ParticipantDriver

PUBLIC = "https://eval.example.org"
PID = "5f0c1e2d3b4a596877a6b5c4"  # Prolific ids are 24 hex characters
QUERY = f"?PROLIFIC_PID={PID}&STUDY_ID=64a0b1c2d3e4f5a6b7c8d9e0&SESSION_ID=sess0001"


@pytest.fixture(autouse=True)
def _public_https(settings):
    settings.PUBLIC_BASE_URL = PUBLIC


def run_prolific(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("prolific", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def pass_pages_until(driver, kind: str) -> None:
    for _ in range(10):
        now = selectors.current_page(driver.participant)["type"]
        if now == kind:
            return
        driver.submit_page({"agree": "yes"} if now == "consent" else {})
    raise AssertionError(f"never reached a {kind} page")


# ------------------------------------------------------------------------------- links, codes, pay
def test_study_url_carries_prolifics_placeholders(demo_study):
    assert prolific.study_url(demo_study) == (
        f"{PUBLIC}/s/{demo_study.public_token}/"
        "?PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"
    )
    assert prolific.completion_url("C0DE") == "https://app.prolific.com/submissions/complete?cc=C0DE"


def test_fair_pay_is_dollars_per_hour():
    assert prolific.fair_pay(2, 8) == Decimal("15.00")
    assert prolific.fair_pay("1.50", 10) == Decimal("9.00")
    assert prolific.fair_pay(1, 7) == Decimal("8.57")
    with pytest.raises(ValueError):
        prolific.fair_pay(1, 0)


def test_command_prints_url_codes_and_hourly_pay(demo_study):
    out, err = run_prolific(demo_study.slug)
    assert prolific.study_url(demo_study) in out
    assert demo_study.completion_code in out
    assert f"https://app.prolific.com/submissions/complete?cc={demo_study.completion_code}" in out
    assert demo_study.screened_out_code in out
    assert "Reward $2.00 for about 8 minutes = $15.00 per hour" in out
    assert err == ""


def test_command_warns_under_the_fair_minimum_and_under_prolifics_floor(demo_study):
    _, err = run_prolific(demo_study.slug, "--fair-hourly", "20")
    assert "under the fair minimum of $20/h" in err and "Prolific recommends at least $12.00/h" in err
    assert "enforced minimum" not in err
    services.study_load(text=demo_spec_text(quick=True).replace("reward_usd: 2.00", "reward_usd: 1.00"))
    out, err = run_prolific(demo_study.slug)
    assert "= $7.50 per hour" in out
    assert "under Prolific's enforced minimum of $8.00/h" in err
    assert "under the fair minimum of $12.00/h" in err


# ------------------------------------------------------------------------------ the participant path
def test_prolific_entry_stores_a_keyed_hash_and_never_the_raw_id(demo_study, driver):
    r = driver.start(QUERY)
    assert r.status_code == 302
    p = driver.participant
    assert p.source == Participant.Source.PROLIFIC
    keyed = hmac.new(settings.PARTICIPANT_ID_HMAC_KEY.encode(), f"prolific:{PID}".encode(), hashlib.sha256)
    assert p.external_id_hash == keyed.hexdigest()
    assert p.external_id_hash != hashlib.sha256(PID.encode()).hexdigest()
    assert p.external_session == {"study_id": "64a0b1c2d3e4f5a6b7c8d9e0", "session_id": "sess0001"}
    for field in Participant._meta.concrete_fields:
        assert PID not in str(getattr(p, field.attname)), f"raw Prolific id stored in Participant.{field.name}"
    # nor anywhere else: every row of every table, and the browser session
    driver.complete()
    for model in apps.get_models():
        for row in model.objects.all():
            for field in model._meta.concrete_fields:
                assert PID not in str(getattr(row, field.attname)), f"raw id in {model.__name__}.{field.name}"
    for session in Session.objects.all():
        assert PID not in str(session.get_decoded())


def test_completion_page_links_back_to_prolific_with_the_completion_code(demo_study, driver):
    driver.start(QUERY)
    final = driver.complete()
    p = driver.participant
    assert p.status == Participant.Status.COMPLETED
    assert p.completion_code == demo_study.completion_code
    assert f'href="{prolific.completion_url(demo_study.completion_code)}"'.encode() in final.content


def test_screened_out_participant_gets_the_screened_out_code(demo_study, driver):
    driver.start(QUERY)
    pass_pages_until(driver, "av_check")
    digits = selectors.av_check_stimulus(driver.participant.version.spec).expected_answer["digits"]
    wrong = str((int(digits[0]) + 1) % 10) + digits[1:]
    driver.submit_page({"digits": wrong})
    driver.submit_page({"digits": wrong})
    assert driver.participant.status == Participant.Status.SCREENED_OUT
    page = driver.page()
    assert demo_study.screened_out_code.encode() in page.content
    assert prolific.completion_url(demo_study.screened_out_code).encode() in page.content
    assert demo_study.completion_code.encode() not in page.content


def test_returning_after_completing_is_refused(demo_study, driver):
    driver.start(QUERY)
    driver.complete()
    again = driver.start(QUERY)
    assert again.status_code == 403 and b"already taken part" in again.content
    elsewhere = ParticipantDriver(Client(), demo_study).start(QUERY)  # another browser, same Prolific id
    assert elsewhere.status_code == 403 and b"already taken part" in elsewhere.content
    assert Participant.objects.filter(study=demo_study).count() == 1


def test_returning_while_active_resumes_the_same_session(demo_study, driver):
    driver.start(QUERY)
    pass_pages_until(driver, "av_check")
    first = driver.participant
    other_browser = ParticipantDriver(Client(), demo_study)
    r = other_browser.start(QUERY)
    assert r.status_code == 302
    resumed = other_browser.participant
    assert resumed.public_id == first.public_id and resumed.page_index == first.page_index
    assert b"digits" in other_browser.page().content.lower()
    assert Participant.objects.filter(study=demo_study).count() == 1
