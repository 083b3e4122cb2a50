"""Running a study on Mechanical Turk: publishing HITs, listing and reviewing assignments, bonuses, keeping
past participants out, and the MTurk side of the participant entry page.

MTurk cannot be reached from the tests, so every call goes to a real boto3 client wrapped in botocore's
Stubber: each expected call is listed with its exact parameters, and the Stubber checks every request
(names, types, required members) against MTurk's published API model, so a wrong parameter fails here.
"""
from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from urllib.parse import urlencode

import boto3
import pytest
from botocore.stub import ANY, Stubber
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

from studies import selectors, services
from studies.models import Exclusion, Participant
from studies.recruiting import RecruitingError, mturk
from tests.conftest import ParticipantDriver

PUBLIC = "https://eval.example.org"
SUBMIT_TO = "https://workersandbox.mturk.com"
NOW = datetime(2025, 5, 1, 12, 0, tzinfo=timezone.utc)
QUAL_ID = "3TOOKPARTQUALIFICATION"
ANSWER_NS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd"


@pytest.fixture(autouse=True)
def _public_https(settings):
    settings.PUBLIC_BASE_URL = PUBLIC


@pytest.fixture
def stub():
    """A real MTurk client (sandbox endpoint, dummy keys) whose every call must be expected."""
    client = boto3.client("mturk", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y",
                          endpoint_url=mturk.SANDBOX_ENDPOINT)
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def command_client(stub, monkeypatch):
    """The stubbed client handed to `manage.py mturk` in place of a real connection."""
    client, stubber = stub
    monkeypatch.setattr(mturk, "make_client", lambda *, sandbox: client)
    return stubber


def run_mturk(*args) -> str:
    out = io.StringIO()
    call_command("mturk", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def entry_query(worker_id: str, assignment_id: str, hit_id: str = "3HITONE") -> str:
    return "?" + urlencode({"assignmentId": assignment_id, "hitId": hit_id, "workerId": worker_id,
                            "turkSubmitTo": SUBMIT_TO})


def answer_xml(code: str) -> str:
    """What MTurk reports for an ExternalQuestion whose form posted `completionCode`."""
    return (f'<?xml version="1.0" encoding="ASCII"?><QuestionFormAnswers xmlns="{ANSWER_NS}"><Answer>'
            f"<QuestionIdentifier>completionCode</QuestionIdentifier><FreeText>{code}</FreeText>"
            "</Answer></QuestionFormAnswers>")


def hit_response(hit_id: str, assignments: int) -> dict:
    return {"HIT": {"HITId": hit_id, "HITTypeId": "3TYPE", "HITGroupId": "3GROUP", "CreationTime": NOW,
                    "Expiration": NOW, "HITStatus": "Assignable", "MaxAssignments": assignments, "Reward": "2.00"}}


def assignment(assignment_id, worker_id, code, status="Submitted", hit_id="3HITONE") -> dict:
    return {"AssignmentId": assignment_id, "WorkerId": worker_id, "HITId": hit_id, "AssignmentStatus": status,
            "AcceptTime": NOW, "SubmitTime": NOW, "Answer": answer_xml(code)}


def expected_question(study) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?><ExternalQuestion xmlns="http://mechanicalturk.amazonaws.com/'
            'AWSMechanicalTurkDataSchemas/2006-07-14/ExternalQuestion.xsd">'
            f"<ExternalURL>{PUBLIC}/s/{study.public_token}/</ExternalURL><FrameHeight>800</FrameHeight>"
            "</ExternalQuestion>")


def expected_hit(study, *, size: int, index: int, env: str, requirements: list) -> dict:
    return {
        "MaxAssignments": size,
        "AutoApprovalDelayInSeconds": 72 * 3600,
        "LifetimeInSeconds": 72 * 3600,
        "AssignmentDurationInSeconds": 60 * 60,
        "Reward": "2.00",
        "Title": "How natural do these talking faces look?",
        "Keywords": "video, rating, faces, perception",
        "Description": "Watch short videos of talking faces and rate them.",
        "Question": expected_question(study),
        "RequesterAnnotation": f"evalsite {study.slug} v1",
        "QualificationRequirements": requirements,
        "UniqueRequestToken": f"evalsite-{study.public_token}-{env}-hit{index}",
    }


LOCALES = {"QualificationTypeId": "00000000000000000071", "Comparator": "In", "LocaleValues": [
    {"Country": c} for c in ["US", "GB", "CA", "AU", "IE", "NZ"]], "ActionsGuarded": "DiscoverPreviewAndAccept"}
NOT_TAKEN_PART = {"QualificationTypeId": QUAL_ID, "Comparator": "DoesNotExist",
                  "ActionsGuarded": "DiscoverPreviewAndAccept"}
LIVE_REQUIREMENTS = [
    {"QualificationTypeId": "000000000000000000L0", "Comparator": "GreaterThanOrEqualTo", "IntegerValues": [95],
     "ActionsGuarded": "DiscoverPreviewAndAccept"},
    {"QualificationTypeId": "00000000000000000040", "Comparator": "GreaterThanOrEqualTo", "IntegerValues": [100],
     "ActionsGuarded": "DiscoverPreviewAndAccept"},
    LOCALES,
    NOT_TAKEN_PART,
]


def expect_qualification_created(stubber, study):
    name = f"Already took part in study {study.public_token}"
    stubber.add_response("list_qualification_types", {"NumResults": 0, "QualificationTypes": []},
                         {"Query": name, "MustBeRequestable": False, "MustBeOwnedByCaller": True, "MaxResults": 100})
    stubber.add_response("create_qualification_type",
                         {"QualificationType": {"QualificationTypeId": QUAL_ID, "Name": name,
                                                "QualificationTypeStatus": "Active"}},
                         {"Name": name, "Keywords": ANY, "Description": ANY, "QualificationTypeStatus": "Active"})


# ------------------------------------------------------------------------------------------ values
def test_external_question_xml_has_the_schema_namespace_and_an_escaped_url():
    url = "https://eval.example.org/s/tok/?a=1&b=<2>"
    text = mturk.external_question_xml(url, frame_height=640)
    assert "&amp;" in text and "&lt;2&gt;" in text
    root = ET.fromstring(text)
    ns = "{http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2006-07-14/ExternalQuestion.xsd}"
    assert root.tag == ns + "ExternalQuestion"
    assert root.find(ns + "ExternalURL").text == url
    assert root.find(ns + "FrameHeight").text == "640"


def test_money_and_hit_sizes():
    assert mturk.money(2) == "2.00" and mturk.money("0.5") == "0.50" and mturk.money(1.005) == "1.01"
    with pytest.raises(RecruitingError):
        mturk.money("-1")
    with pytest.raises(RecruitingError):
        mturk.money("lots")
    assert mturk.split_assignments(20, 9) == [7, 7, 6]
    assert mturk.split_assignments(9, 9) == [9]
    # 20% commission; 40% on a HIT of 10 or more assignments
    assert str(mturk.estimated_cost("2.00", [9])) == "21.60"
    assert str(mturk.estimated_cost("2.00", [10])) == "28.00"
    assert str(mturk.estimated_cost("0.02", [1])) == "0.03"  # at least a cent of commission


# ----------------------------------------------------------------------------------------- publish
def test_publish_creates_the_qualification_once_and_hits_with_the_spec_values(demo_study, stub):
    client, stubber = stub
    expect_qualification_created(stubber, demo_study)
    stubber.add_response("create_hit", hit_response("3HITONE", 5),
                         expected_hit(demo_study, size=5, index=0, env="live", requirements=LIVE_REQUIREMENTS))
    hits = mturk.publish_hits(client, study=demo_study, assignments=5, sandbox=False)
    assert [h.hit_id for h in hits] == ["3HITONE"]
    stubber.assert_no_pending_responses()

    # a second batch reuses the stored qualification type: no list/create calls, a fresh request token
    stubber.add_response("create_hit", hit_response("3HITTWO", 4),
                         expected_hit(demo_study, size=4, index=1, env="live", requirements=LIVE_REQUIREMENTS))
    mturk.publish_hits(client, study=demo_study, assignments=4, sandbox=False)

    demo_study.refresh_from_db()
    live = demo_study.recruiting["mturk"]["live"]
    assert live["qualification_type_id"] == QUAL_ID
    assert [(h["hit_id"], h["assignments"], h["reward"]) for h in live["hits"]] == [
        ("3HITONE", 5, "2.00"), ("3HITTWO", 4, "2.00")]
    assert "sandbox" not in demo_study.recruiting["mturk"]


def test_publish_in_the_sandbox_splits_into_small_hits_and_finds_an_unrecorded_qualification(
    demo_study, command_client
):
    stubber = command_client
    name = f"Already took part in study {demo_study.public_token}"
    # the type exists at MTurk (created earlier, never recorded): found by name, not created again
    stubber.add_response("list_qualification_types", {"NumResults": 1, "QualificationTypes": [
        {"QualificationTypeId": QUAL_ID, "Name": name, "QualificationTypeStatus": "Active"}]},
        {"Query": name, "MustBeRequestable": False, "MustBeOwnedByCaller": True, "MaxResults": 100})
    for index, size in enumerate([7, 7, 6]):
        # no work-history requirements in the sandbox: sandbox worker accounts have none
        stubber.add_response("create_hit", hit_response(f"3HIT{index}", size),
                             expected_hit(demo_study, size=size, index=index, env="sandbox",
                                          requirements=[LOCALES, NOT_TAKEN_PART]))
    out = run_mturk("publish", demo_study.slug, "--assignments", "20")
    assert "published 3 HIT(s) in the MTurk sandbox" in out
    assert "https://workersandbox.mturk.com/projects/3GROUP/tasks" in out
    demo_study.refresh_from_db()
    assert mturk.recorded_hit_ids(demo_study, sandbox=True) == ["3HIT0", "3HIT1", "3HIT2"]


def test_publishing_again_first_blocks_the_workers_of_earlier_hits(demo_study, command_client):
    stubber = command_client
    services.study_recruiting_set(study=demo_study, keys=("mturk", "sandbox"),
                                  value={"qualification_type_id": QUAL_ID, "hits": [{"hit_id": "3HITONE"}]})
    stubber.add_response("list_assignments_for_hit", {"NumResults": 1, "Assignments": [
        assignment("3ASSIGNA", "A1WORKER", "CODE")]}, {"HITId": "3HITONE", "MaxResults": 100})
    stubber.add_response("associate_qualification_with_worker", {}, {
        "QualificationTypeId": QUAL_ID, "WorkerId": "A1WORKER", "IntegerValue": 1, "SendNotification": False})
    stubber.add_response("create_hit", hit_response("3HITTWO", 3),
                         expected_hit(demo_study, size=3, index=1, env="sandbox",
                                      requirements=[LOCALES, NOT_TAKEN_PART]))
    out = run_mturk("publish", demo_study.slug, "--assignments", "3", "--sandbox")
    assert "1 past worker(s)" in out


def test_live_publish_is_refused_without_yes_and_calls_nothing(demo_study, monkeypatch):
    def no_client(**_):
        raise AssertionError("no MTurk client may be made")

    monkeypatch.setattr(mturk, "make_client", no_client)
    with pytest.raises(CommandError, match="--yes"):
        run_mturk("publish", demo_study.slug, "--assignments", "5", "--live")
    demo_study.refresh_from_db()
    assert demo_study.recruiting == {}


def test_live_publish_with_yes_checks_the_balance_first(demo_study, command_client):
    command_client.add_response("get_account_balance", {"AvailableBalance": "1.00"}, {})
    with pytest.raises(CommandError, match=r"the account has \$1.00, less than the \$12.00"):
        run_mturk("publish", demo_study.slug, "--assignments", "5", "--live", "--yes")


def test_publish_refuses_a_closed_study_and_a_plain_http_site(demo_study, stub, settings):
    client, _ = stub
    settings.PUBLIC_BASE_URL = "http://127.0.0.1:8000"
    with pytest.raises(RecruitingError, match="PUBLIC_BASE_URL"):
        mturk.publish_hits(client, study=demo_study, assignments=1, sandbox=True)
    services.study_set_status(study=demo_study, status="closed")
    with pytest.raises(RecruitingError, match="open it first"):
        mturk.publish_hits(client, study=demo_study, assignments=1, sandbox=True)


# ---------------------------------------------------------------------------------- list and review
def test_list_assignments_follows_next_token_pages(stub):
    client, stubber = stub
    stubber.add_response("list_assignments_for_hit",
                         {"NumResults": 1, "NextToken": "page2", "Assignments": [assignment("3A1", "A1W", "C1")]},
                         {"HITId": "3HITONE", "MaxResults": 100})
    stubber.add_response("list_assignments_for_hit",
                         {"NumResults": 1, "Assignments": [assignment("3A2", "A2W", "C2", status="Approved")]},
                         {"HITId": "3HITONE", "MaxResults": 100, "NextToken": "page2"})
    stubber.add_response("list_assignments_for_hit",
                         {"NumResults": 1, "Assignments": [assignment("3A3", "A3W", "C3", hit_id="3HITTWO")]},
                         {"HITId": "3HITTWO", "MaxResults": 100})
    got = mturk.list_assignments(client, ["3HITONE", "3HITTWO"])
    assert [(a.assignment_id, a.worker_id, a.hit_id, a.status, a.completion_code) for a in got] == [
        ("3A1", "A1W", "3HITONE", "Submitted", "C1"),
        ("3A2", "A2W", "3HITONE", "Approved", "C2"),
        ("3A3", "A3W", "3HITTWO", "Submitted", "C3"),
    ]


def test_list_command_shows_hits_and_assignments(demo_study, command_client):
    stubber = command_client
    services.study_recruiting_append(study=demo_study, keys=("mturk", "sandbox", "hits"), items=[{"hit_id": "3HITONE"}])
    stubber.add_response("get_hit", {"HIT": {"HITId": "3HITONE", "HITStatus": "Assignable", "MaxAssignments": 9,
                                             "NumberOfAssignmentsPending": 2, "NumberOfAssignmentsAvailable": 6,
                                             "NumberOfAssignmentsCompleted": 1}}, {"HITId": "3HITONE"})
    stubber.add_response("list_assignments_for_hit", {"NumResults": 1, "Assignments": [
        assignment("3A1", "A1W", "C0DE")]}, {"HITId": "3HITONE", "MaxResults": 100})
    out = run_mturk("list", demo_study.slug)
    assert "1 completed, 2 pending, 6 available" in out
    assert "3A1" in out and "A1W" in out and "C0DE" in out


def test_answer_xml_is_read_without_caring_about_namespaces():
    assert mturk.parse_answer(answer_xml("AB12")) == {"completionCode": "AB12"}
    assert mturk.parse_answer("<not xml") == {}
    assert mturk.parse_answer(None) == {}


def _screen_out(driver):
    """Fail the A/V check twice (wrong digits), as a participant without sound would."""
    for _ in range(10):
        kind = selectors.current_page(driver.participant)["type"]
        if kind == "av_check":
            break
        driver.submit_page({"agree": "yes"} if kind == "consent" else {})
    digits = selectors.av_check_stimulus(driver.participant.version.spec).expected_answer["digits"]
    wrong = str((int(digits[0]) + 1) % 10) + digits[1:]
    driver.submit_page({"digits": wrong})
    driver.submit_page({"digits": wrong})


def test_verify_assignment_applies_each_decision_rule(demo_study, driver):
    # completed through every page, valid
    driver.start(entry_query("A1GOOD", "3ASSIGNGOOD"))
    final = driver.complete()
    good = driver.participant
    assert good.source == "mturk" and good.status == "completed"
    # the completion page posts the code back to MTurk; that is the answer review reads
    assert f'action="{SUBMIT_TO}/mturk/externalSubmit"'.encode() in final.content
    assert b'name="completionCode" value="' + good.completion_code.encode() in final.content
    # completed, but fails the attention check: excluded for quality
    sloppy = ParticipantDriver(Client(), demo_study)
    sloppy.start(entry_query("A1SLOPPY", "3ASSIGNSLOPPY"))
    sloppy.complete(attention_value=7)
    excluded = sloppy.participant
    reason = Exclusion.objects.get(participant=excluded, rule="attention_check").reason
    # screened out: wrong digits twice on the A/V check
    screened = ParticipantDriver(Client(), demo_study)
    screened.start(entry_query("A1SCREENED", "3ASSIGNSCREEN"))
    _screen_out(screened)
    assert screened.participant.status == "screened_out"
    # started, never finished
    services.participant_start(study=demo_study, source="mturk", external_id="A1ACTIVE",
                               external_session={"assignment_id": "3ASSIGNACTIVE"})

    def decide(assignment_id, worker_id, code, status="Submitted"):
        a = mturk.Assignment(assignment_id=assignment_id, worker_id=worker_id, hit_id="3HITONE", status=status,
                             submitted_at=NOW, answers=mturk.parse_answer(answer_xml(code)))
        d = mturk.verify_assignment(demo_study, a)
        return d.action, d.rule, d.feedback

    assert decide("3ASSIGNGOOD", "A1GOOD", good.completion_code) == ("approve", "completed", mturk.FEEDBACK_THANKS)
    assert decide("3ASSIGNGOOD", "A1GOOD", "WRONGCODE") == ("reject", "wrong_code", mturk.FEEDBACK_WRONG_CODE)
    assert decide("3ASSIGNGOOD", "A1GOOD", "") == ("reject", "wrong_code", mturk.FEEDBACK_WRONG_CODE)
    action, rule, feedback = decide("3ASSIGNSLOPPY", "A1SLOPPY", excluded.completion_code)
    assert (action, rule) == ("reject", "excluded") and reason in feedback
    assert decide("3ASSIGNX", "A1NOBODY", "ANYTHING") == (
        "reject", "unknown_worker", "We have no record of this participant completing the study.")
    assert decide("3ASSIGNSCREEN", "A1SCREENED", "") == ("approve", "screened_out", mturk.FEEDBACK_SCREENED_OUT)
    assert decide("3ASSIGNACTIVE", "A1ACTIVE", "GUESS") == ("reject", "not_completed", mturk.FEEDBACK_NO_RECORD)
    # one person, one paid assignment: the same worker's code under another assignment is refused
    assert decide("3ASSIGNOTHER", "A1GOOD", good.completion_code)[:2] == ("reject", "other_assignment")
    assert decide("3ASSIGNGOOD", "A1GOOD", good.completion_code, status="Approved")[:2] == ("none", "already_approved")


def test_review_prints_the_table_and_sends_decisions_only_with_apply(demo_study, command_client):
    stubber = command_client
    services.study_recruiting_append(study=demo_study, keys=("mturk", "sandbox", "hits"), items=[{"hit_id": "3HITONE"}])
    done, _ = services.participant_start(study=demo_study, source="mturk", external_id="A1DONE",
                                         external_session={"assignment_id": "3ASSIGNDONE"})
    bad, _ = services.participant_start(study=demo_study, source="mturk", external_id="A1BAD",
                                        external_session={"assignment_id": "3ASSIGNBAD"})
    Participant.objects.filter(pk__in=[done.pk, bad.pk]).update(status="completed", completion_code="C0DE42")
    services.exclusion_add(participant=bad, rule="speed", reason="median answer time 300 ms is below 1000 ms")
    listing = {"NumResults": 4, "Assignments": [
        assignment("3ASSIGNDONE", "A1DONE", "C0DE42"),
        assignment("3ASSIGNBAD", "A1BAD", "C0DE42"),
        assignment("3ASSIGNNOBODY", "A1NOBODY", "MADEUP"),
        assignment("3ASSIGNOLD", "A1OLD", "C0DE42", status="Approved"),
    ]}
    stubber.add_response("list_assignments_for_hit", listing, {"HITId": "3HITONE", "MaxResults": 100})
    dry = run_mturk("review", demo_study.slug)  # nothing else is stubbed: any approve/reject call would fail
    assert "1 to approve, 2 to reject, 1 already decided. Nothing was sent" in dry
    assert "unknown_worker" in dry and "excluded" in dry

    stubber.add_response("list_assignments_for_hit", listing, {"HITId": "3HITONE", "MaxResults": 100})
    stubber.add_response("approve_assignment", {}, {"AssignmentId": "3ASSIGNDONE",
                                                    "RequesterFeedback": "Thank you for taking part."})
    stubber.add_response("reject_assignment", {}, {
        "AssignmentId": "3ASSIGNBAD",
        "RequesterFeedback": "Your responses did not meet the study's quality rules: "
                             "median answer time 300 ms is below 1000 ms."})
    stubber.add_response("reject_assignment", {}, {
        "AssignmentId": "3ASSIGNNOBODY",
        "RequesterFeedback": "We have no record of this participant completing the study."})
    applied = run_mturk("review", demo_study.slug, "--apply")
    assert "sent 3 decision(s) to MTurk" in applied


def test_review_needs_published_hits(demo_study, command_client):
    with pytest.raises(CommandError, match="no HITs in the MTurk sandbox"):
        run_mturk("review", demo_study.slug)


# -------------------------------------------------------------------------------- bonus and blocking
def test_send_bonus_passes_the_unique_request_token(stub):
    client, stubber = stub
    stubber.add_response("send_bonus", {}, {"WorkerId": "A1W", "BonusAmount": "0.50", "AssignmentId": "3A1",
                                            "Reason": "Thanks!", "UniqueRequestToken": "tok-1"})
    mturk.send_bonus(client, worker_id="A1W", assignment_id="3A1", amount="0.5", reason="Thanks!",
                     unique_token="tok-1")


def test_bonus_is_paid_once_with_a_deterministic_token(demo_study, command_client):
    stubber = command_client
    services.participant_start(study=demo_study, source="mturk", external_id="A1BONUS",
                               external_session={"assignment_id": "3ASSIGNB"})
    token = mturk.bonus_token(demo_study, assignment_id="3ASSIGNB", amount="0.50", earlier=0)
    assert token == mturk.bonus_token(demo_study, assignment_id="3ASSIGNB", amount="0.50", earlier=0)
    assert token != mturk.bonus_token(demo_study, assignment_id="3ASSIGNB", amount="0.75", earlier=0)
    assert len(token) <= 64
    args = ("bonus", demo_study.slug, "--worker-id", "A1BONUS", "--assignment-id", "3ASSIGNB",
            "--amount", "0.5", "--reason", "Careful ratings, thank you")
    stubber.add_response("send_bonus", {}, {"WorkerId": "A1BONUS", "BonusAmount": "0.50", "AssignmentId": "3ASSIGNB",
                                            "Reason": "Careful ratings, thank you", "UniqueRequestToken": token})
    assert token in run_mturk(*args)
    # the same command again sends nothing (no response is stubbed for it)
    with pytest.raises(CommandError, match="already sent"):
        run_mturk(*args)
    # a deliberate second bonus gets a new token
    stubber.add_response("send_bonus", {}, {
        "WorkerId": "A1BONUS", "BonusAmount": "0.50", "AssignmentId": "3ASSIGNB", "Reason": "Careful ratings, thank you",
        "UniqueRequestToken": mturk.bonus_token(demo_study, assignment_id="3ASSIGNB", amount="0.50", earlier=1)})
    run_mturk(*args, "--again")
    demo_study.refresh_from_db()
    bonuses = demo_study.recruiting["mturk"]["sandbox"]["bonuses"]
    assert len(bonuses) == 2 and "A1BONUS" not in str(demo_study.recruiting)  # raw worker ids are not stored


def test_bonus_for_a_worker_without_a_session_is_refused(demo_study, command_client):
    with pytest.raises(CommandError, match="has no session"):
        run_mturk("bonus", demo_study.slug, "--worker-id", "A1STRANGER", "--assignment-id", "3X",
                  "--amount", "1", "--reason", "x")


def test_block_past_qualifies_every_worker_of_the_study_silently(demo_study, command_client):
    stubber = command_client
    services.study_recruiting_set(study=demo_study, keys=("mturk", "sandbox"),
                                  value={"qualification_type_id": QUAL_ID, "hits": [{"hit_id": "3H1"}, {"hit_id": "3H2"}]})
    stubber.add_response("list_assignments_for_hit", {"NumResults": 2, "Assignments": [
        assignment("3A1", "A1B", "C", hit_id="3H1"), assignment("3A2", "A1A", "C", hit_id="3H1")]},
        {"HITId": "3H1", "MaxResults": 100})
    stubber.add_response("list_assignments_for_hit", {"NumResults": 1, "Assignments": [
        assignment("3A3", "A1A", "C", status="Rejected", hit_id="3H2")]}, {"HITId": "3H2", "MaxResults": 100})
    for worker in ["A1A", "A1B"]:
        stubber.add_response("associate_qualification_with_worker", {}, {
            "QualificationTypeId": QUAL_ID, "WorkerId": worker, "IntegerValue": 1, "SendNotification": False})
    out = run_mturk("block-past", demo_study.slug)
    assert f"2 worker(s) hold qualification {QUAL_ID}" in out


# ------------------------------------------------------------------------------------------- errors
def test_an_mturk_refusal_becomes_a_one_line_error_with_its_code(command_client):
    command_client.add_client_error("get_account_balance", service_error_code="RequestError",
                                    service_message="This operation can be called with a status of: Active")
    with pytest.raises(CommandError) as caught:
        run_mturk("balance")
    assert str(caught.value) == (
        "MTurk refused GetAccountBalance: RequestError: This operation can be called with a status of: Active")


def test_balance(command_client):
    command_client.add_response("get_account_balance", {"AvailableBalance": "10000.00"}, {})
    assert "available balance in the MTurk sandbox: $10000.00" in run_mturk("balance")


def test_missing_credentials_name_the_environment_variables(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(CommandError, match="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        run_mturk("balance")


# ----------------------------------------------------------------------------- the participant side
def test_mturk_preview_shows_the_task_and_creates_no_participant(demo_study, client):
    url = reverse("entry", args=[demo_study.public_token])
    r = client.get(url + "?" + urlencode({"assignmentId": "ASSIGNMENT_ID_NOT_AVAILABLE", "hitId": "3HITONE",
                                          "turkSubmitTo": SUBMIT_TO}))
    assert r.status_code == 200 and b"Accept the HIT" in r.content
    assert not Participant.objects.filter(study=demo_study).exists()


def test_mturk_entry_stores_only_a_keyed_hash_of_the_worker_id(demo_study, driver):
    r = driver.start(entry_query("A1RAWWORKERID", "3ASSIGNENTRY"))
    assert r.status_code == 302
    p = driver.participant
    assert p.source == "mturk"
    assert p.external_id_hash == services.external_id_hash("mturk", "A1RAWWORKERID")
    assert p.external_session == {"assignment_id": "3ASSIGNENTRY", "hit_id": "3HITONE", "submit_to": SUBMIT_TO}
    for field in Participant._meta.concrete_fields:
        assert "A1RAWWORKERID" not in str(getattr(p, field.attname)), field.name
