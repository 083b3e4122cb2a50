"""Amazon Mechanical Turk: publish a study as HITs, review and pay the assignments, keep past
participants out of later HITs.

A thin, typed layer over boto3's `mturk` client. Every function takes the client as its first argument,
so tests pass a real client wrapped in botocore's Stubber, which checks every request against MTurk's API
model. Credentials come from the environment as boto3 reads them (AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, or AWS_PROFILE).

What MTurk knows of a study is kept in `study.recruiting["mturk"][environment]`, where environment is
"sandbox" or "live" (two separate marketplaces whose ids never mix):

    {"qualification_type_id": "3X...",            # the study's "already took part" qualification
     "hits": [{"hit_id", "hit_type_id", "hit_group_id", "assignments", "reward", "created_at", "expires_at"}],
     "bonuses": [{"assignment_id", "participant", "amount", "reason", "token", "sent_at"}]}

Raw worker ids are never stored (DESIGN.md: external ids only as keyed hashes). They are read from MTurk
when needed (reviewing, blocking, paying) and compared with our participants through
`services.external_id_hash("mturk", worker_id)`.
"""
from __future__ import annotations

import hashlib
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Iterable, Literal
from xml.sax.saxutils import escape as xml_escape

from django.utils import timezone

from .. import services
from ..models import Participant, Study
from . import RecruitingError, participant_entry_url, require_public_https

REGION = "us-east-1"
SANDBOX_ENDPOINT = "https://mturk-requester-sandbox.us-east-1.amazonaws.com"
LIVE_ENDPOINT = "https://mturk-requester.us-east-1.amazonaws.com"
WORKER_SITE = {"sandbox": "https://workersandbox.mturk.com", "live": "https://worker.mturk.com"}

EXTERNAL_QUESTION_NS = (
    "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2006-07-14/ExternalQuestion.xsd"
)
# MTurk's system qualification types (the same ids in the sandbox and live).
QUALIFICATION_APPROVAL_RATE = "000000000000000000L0"  # Worker_PercentAssignmentsApproved
QUALIFICATION_APPROVED_HITS = "00000000000000000040"  # Worker_NumberHITsApproved
QUALIFICATION_LOCALE = "00000000000000000071"  # Worker_Locale

# MTurk charges a 20% commission, and 20% more on HITs with 10 or more assignments; so a batch is split
# into HITs of at most 9 assignments unless asked otherwise.
COMMISSION = Decimal("0.20")
LARGE_HIT_SURCHARGE = Decimal("0.20")
LARGE_HIT_ASSIGNMENTS = 10
MIN_COMMISSION = Decimal("0.01")
DEFAULT_ASSIGNMENTS_PER_HIT = LARGE_HIT_ASSIGNMENTS - 1
FEEDBACK_MAX_CHARS = 1024  # RequesterFeedback limit

CENT = Decimal("0.01")
Environment = Literal["sandbox", "live"]


def environment(sandbox: bool) -> Environment:
    return "sandbox" if sandbox else "live"


def make_client(*, sandbox: bool):
    """A boto3 MTurk client for the sandbox or the live marketplace (credentials from the environment)."""
    import boto3

    return boto3.client(
        "mturk", region_name=REGION, endpoint_url=SANDBOX_ENDPOINT if sandbox else LIVE_ENDPOINT
    )


# ------------------------------------------------------------------------------------------ values
def money(amount: Decimal | float | int | str) -> str:
    """Dollars as MTurk wants them: a string with two decimals ("2.00"); refuses negatives and nonsense."""
    try:
        value = Decimal(str(amount)).quantize(CENT, rounding=ROUND_HALF_UP)
    except InvalidOperation:
        raise RecruitingError(f"{amount!r} is not an amount of dollars; write e.g. 0.50") from None
    if not value.is_finite() or value < 0:
        raise RecruitingError(f"{amount!r} is not an amount of dollars; write e.g. 0.50")
    return str(value)


def external_question_xml(url: str, frame_height: int = 800) -> str:
    """The ExternalQuestion document that shows `url` in the HIT's frame (0 = the whole window).

    MTurk appends assignmentId, hitId, workerId and turkSubmitTo to the URL when it shows the page.
    """
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<ExternalQuestion xmlns="{EXTERNAL_QUESTION_NS}">'
        f"<ExternalURL>{xml_escape(url)}</ExternalURL>"
        f"<FrameHeight>{int(frame_height)}</FrameHeight>"
        "</ExternalQuestion>"
    )


def split_assignments(assignments: int, per_hit: int) -> list[int]:
    """How many assignments each HIT gets: as even as possible, none over `per_hit`."""
    if assignments < 1 or per_hit < 1:
        raise RecruitingError("the number of assignments and assignments per HIT must be at least 1")
    n_hits = math.ceil(assignments / per_hit)
    base, extra = divmod(assignments, n_hits)
    return [base + 1 if i < extra else base for i in range(n_hits)]


def estimated_cost(reward: Decimal | float | str, sizes: Iterable[int]) -> Decimal:
    """What MTurk charges for HITs of these sizes: reward plus commission per assignment."""
    reward = Decimal(money(reward))
    total = Decimal(0)
    for n in sizes:
        rate = COMMISSION + (LARGE_HIT_SURCHARGE if n >= LARGE_HIT_ASSIGNMENTS else 0)
        fee = max(MIN_COMMISSION, (reward * rate).quantize(CENT, rounding=ROUND_HALF_UP))
        total += n * (reward + fee)
    return total


def qualification_requirements(
    mturk_spec: dict, *, took_part_qualification_id: str, sandbox: bool
) -> list[dict[str, Any]]:
    """Who may find and take the HIT.

    Live: approval rate and approved-HIT count at least the spec's minimums, a locale from the spec's list,
    and not holding the study's "already took part" qualification (hidden from them entirely). In the
    sandbox the two work-history requirements are left out: sandbox worker accounts (usually the
    researchers themselves) have no history, and would never see the HIT.
    """
    requirements: list[dict[str, Any]] = []
    if not sandbox and mturk_spec["min_approval_rate"] > 0:
        requirements.append({
            "QualificationTypeId": QUALIFICATION_APPROVAL_RATE,
            "Comparator": "GreaterThanOrEqualTo",
            "IntegerValues": [int(mturk_spec["min_approval_rate"])],
            "ActionsGuarded": "DiscoverPreviewAndAccept",
        })
    if not sandbox and mturk_spec["min_approved_hits"] > 0:
        requirements.append({
            "QualificationTypeId": QUALIFICATION_APPROVED_HITS,
            "Comparator": "GreaterThanOrEqualTo",
            "IntegerValues": [int(mturk_spec["min_approved_hits"])],
            "ActionsGuarded": "DiscoverPreviewAndAccept",
        })
    if mturk_spec["locales"]:
        requirements.append({
            "QualificationTypeId": QUALIFICATION_LOCALE,
            "Comparator": "In",
            "LocaleValues": [_locale(code) for code in mturk_spec["locales"]],
            "ActionsGuarded": "DiscoverPreviewAndAccept",
        })
    requirements.append({
        "QualificationTypeId": took_part_qualification_id,
        "Comparator": "DoesNotExist",
        "ActionsGuarded": "DiscoverPreviewAndAccept",
    })
    return requirements


def _locale(code: str) -> dict[str, str]:
    """'US' -> {'Country': 'US'}; 'US-NY' -> {'Country': 'US', 'Subdivision': 'NY'} (ISO 3166 codes)."""
    country, _, subdivision = code.strip().upper().partition("-")
    if len(country) != 2 or (subdivision and len(subdivision) != 2):
        raise RecruitingError(
            f"recruitment.mturk.locales: {code!r} is not a country code; write ISO 3166 codes like US or US-NY"
        )
    return {"Country": country, "Subdivision": subdivision} if subdivision else {"Country": country}


# ------------------------------------------------------------------------------------ state on Study
def recorded(study: Study, *, sandbox: bool) -> dict:
    """What this study has published in one marketplace (see the module docstring)."""
    return (study.recruiting or {}).get("mturk", {}).get(environment(sandbox), {})


def recorded_hit_ids(study: Study, *, sandbox: bool) -> list[str]:
    return [hit["hit_id"] for hit in recorded(study, sandbox=sandbox).get("hits", [])]


# ------------------------------------------------------------------------- "already took part" block
def took_part_qualification_name(study: Study) -> str:
    # Workers can see qualification names, so this uses the public token, never the slug.
    return f"Already took part in study {study.public_token}"


def took_part_qualification(client, *, study: Study, sandbox: bool) -> str:
    """The id of the study's "already took part" qualification type, created once per marketplace.

    Idempotent: the id stored on the study is reused; without one, a type of ours with the same name is
    looked up first (a create that succeeded but was never recorded), and only then one is created.
    """
    env = environment(sandbox)
    stored = recorded(study, sandbox=sandbox).get("qualification_type_id")
    if stored:
        return stored
    name = took_part_qualification_name(study)
    found = None
    params: dict[str, Any] = {"Query": name, "MustBeRequestable": False, "MustBeOwnedByCaller": True, "MaxResults": 100}
    while found is None:
        page = client.list_qualification_types(**params)
        found = next((q["QualificationTypeId"] for q in page.get("QualificationTypes", []) if q.get("Name") == name), None)
        if not page.get("NextToken") or not page.get("QualificationTypes"):
            break
        params["NextToken"] = page["NextToken"]
    if found is None:
        created = client.create_qualification_type(
            Name=name,
            Keywords="evalsite, took part",
            Description=(
                "Given to workers who took part in this study, so that its later HITs are hidden from them: "
                "each person takes part once."
            ),
            QualificationTypeStatus="Active",
        )
        found = created["QualificationType"]["QualificationTypeId"]
    services.study_recruiting_set(study=study, keys=("mturk", env, "qualification_type_id"), value=found)
    return found


def qualify_worker(client, *, qualification_type_id: str, worker_id: str) -> None:
    """Give one worker the "already took part" qualification, silently (no e-mail to the worker)."""
    client.associate_qualification_with_worker(
        QualificationTypeId=qualification_type_id, WorkerId=worker_id, IntegerValue=1, SendNotification=False
    )


def block_past_participants(client, *, study: Study, sandbox: bool) -> list[str]:
    """Qualify every worker who holds an assignment of the study's HITs, so later HITs are hidden from them.

    Returns the worker ids blocked (in memory only). Workers who accepted and then returned a HIT are not
    listed by MTurk; if they come back the entry page refuses them (their hashed id is on record).
    """
    qualification_id = took_part_qualification(client, study=study, sandbox=sandbox)
    workers = sorted({a.worker_id for a in list_assignments(client, recorded_hit_ids(study, sandbox=sandbox))})
    for worker_id in workers:
        qualify_worker(client, qualification_type_id=qualification_id, worker_id=worker_id)
    return workers


# ----------------------------------------------------------------------------------------- publish
@dataclass(frozen=True)
class PublishedHit:
    hit_id: str
    hit_type_id: str
    hit_group_id: str
    assignments: int
    reward: str
    expires_at: str

    def worker_url(self, env: Environment) -> str:
        return f"{WORKER_SITE[env]}/projects/{self.hit_group_id}/tasks"


def publish_hits(
    client,
    *,
    study: Study,
    assignments: int,
    sandbox: bool,
    per_hit: int = DEFAULT_ASSIGNMENTS_PER_HIT,
    frame_height: int = 800,
) -> list[PublishedHit]:
    """Create HITs for `assignments` assignments in all, each showing the study's entry page.

    Reward, title, description, keywords and durations come from the spec's `recruitment` section. Each
    HIT is recorded on the study as soon as it exists, so a failure half-way loses none. A
    UniqueRequestToken per HIT makes a retried request (network timeout) not create a second HIT.
    """
    if study.status != Study.Status.LIVE:
        raise RecruitingError(
            f"study {study.slug} is {study.status}; open it first (`manage.py load_study FILE --open` or the dashboard)"
        )
    url = participant_entry_url(study)
    require_public_https(url)
    version = study.current_version
    recruitment = version.spec["recruitment"]
    mturk_spec = recruitment["mturk"]
    sizes = split_assignments(assignments, per_hit)
    reward = money(recruitment["reward_usd"])
    requirements = qualification_requirements(
        mturk_spec,
        took_part_qualification_id=took_part_qualification(client, study=study, sandbox=sandbox),
        sandbox=sandbox,
    )
    env = environment(sandbox)
    question = external_question_xml(url, frame_height)
    already = len(recorded(study, sandbox=sandbox).get("hits", []))
    published = []
    for i, size in enumerate(sizes):
        response = client.create_hit(
            MaxAssignments=size,
            AutoApprovalDelayInSeconds=round(mturk_spec["auto_approval_hours"] * 3600),
            LifetimeInSeconds=round(mturk_spec["lifetime_hours"] * 3600),
            AssignmentDurationInSeconds=round(mturk_spec["assignment_duration_minutes"] * 60),
            Reward=reward,
            Title=mturk_spec["title"],
            Keywords=mturk_spec["keywords"],
            Description=mturk_spec["description"],
            Question=question,
            RequesterAnnotation=f"evalsite {study.slug} v{version.number}"[:255],
            QualificationRequirements=requirements,
            UniqueRequestToken=f"evalsite-{study.public_token}-{env}-hit{already + i}",
        )
        hit = response["HIT"]
        expiration = hit.get("Expiration")
        record = PublishedHit(
            hit_id=hit["HITId"],
            hit_type_id=hit.get("HITTypeId", ""),
            hit_group_id=hit.get("HITGroupId", ""),
            assignments=size,
            reward=reward,
            expires_at=expiration.isoformat() if isinstance(expiration, datetime) else "",
        )
        services.study_recruiting_append(
            study=study, keys=("mturk", env, "hits"),
            items=[{**record.__dict__, "created_at": timezone.now().isoformat()}],
        )
        published.append(record)
    return published


@dataclass(frozen=True)
class HitSummary:
    hit_id: str
    status: str
    max_assignments: int
    pending: int
    available: int
    completed: int
    expires_at: datetime | None


def describe_hits(client, hit_ids: Iterable[str]) -> list[HitSummary]:
    out = []
    for hit_id in hit_ids:
        hit = client.get_hit(HITId=hit_id)["HIT"]
        out.append(HitSummary(
            hit_id=hit_id,
            status=hit.get("HITStatus", ""),
            max_assignments=hit.get("MaxAssignments", 0),
            pending=hit.get("NumberOfAssignmentsPending", 0),
            available=hit.get("NumberOfAssignmentsAvailable", 0),
            completed=hit.get("NumberOfAssignmentsCompleted", 0),
            expires_at=hit.get("Expiration"),
        ))
    return out


# ------------------------------------------------------------------------------------- assignments
@dataclass(frozen=True)
class Assignment:
    """One worker's assignment as MTurk reports it. `worker_id` is raw: keep it in memory only."""

    assignment_id: str
    worker_id: str
    hit_id: str
    status: str  # Submitted, Approved or Rejected
    submitted_at: datetime | None
    answers: dict[str, str]

    @property
    def completion_code(self) -> str:
        return self.answers.get("completionCode", "").strip()


def parse_answer(answer_xml: str | None) -> dict[str, str]:
    """The fields of a QuestionFormAnswers document: {QuestionIdentifier: FreeText (or selections)}.

    An ExternalQuestion's answer holds the form fields posted to MTurk's externalSubmit (here
    `completionCode`). Namespaces are ignored; an unreadable document gives no fields.
    """
    if not answer_xml:
        return {}
    try:
        root = ET.fromstring(answer_xml)
    except ET.ParseError:
        return {}

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    fields = {}
    for answer in root:
        if local(answer.tag) != "Answer":
            continue
        key, values = None, []
        for child in answer:
            name = local(child.tag)
            if name == "QuestionIdentifier":
                key = (child.text or "").strip()
            elif name in ("FreeText", "SelectionIdentifier", "OtherSelectionText"):
                values.append(child.text or "")
        if key:
            fields[key] = ",".join(values)
    return fields


def list_assignments(client, hit_ids: Iterable[str]) -> list[Assignment]:
    """Every assignment (submitted, approved or rejected) of these HITs, following NextToken pages."""
    out = []
    for hit_id in hit_ids:
        params: dict[str, Any] = {"HITId": hit_id, "MaxResults": 100}
        while True:
            page = client.list_assignments_for_hit(**params)
            for a in page.get("Assignments", []):
                out.append(Assignment(
                    assignment_id=a["AssignmentId"],
                    worker_id=a["WorkerId"],
                    hit_id=a.get("HITId", hit_id),
                    status=a.get("AssignmentStatus", ""),
                    submitted_at=a.get("SubmitTime"),
                    answers=parse_answer(a.get("Answer")),
                ))
            token = page.get("NextToken")
            if not token or not page.get("Assignments"):
                break
            params["NextToken"] = token
    return out


# ------------------------------------------------------------------------------------------ review
APPROVE, REJECT, NONE = "approve", "reject", "none"

FEEDBACK_THANKS = "Thank you for taking part."
FEEDBACK_SCREENED_OUT = (
    "Thank you. Your audio/video check did not succeed, so the study ended early; you are paid for your time."
)
FEEDBACK_NO_RECORD = "We have no record of this participant completing the study."
FEEDBACK_WRONG_CODE = "The completion code submitted does not match the one shown at the end of the study."
FEEDBACK_OTHER_ASSIGNMENT = (
    "You already took part in this study under another assignment; each person takes part once."
)


@dataclass(frozen=True)
class Decision:
    """What to do with one assignment. `feedback` is what the worker reads; `rule` names the rule."""

    action: str  # approve, reject or none (already decided)
    rule: str
    feedback: str
    participant: str = ""  # our participant's public id, when one matches


def verify_assignment(study: Study, assignment: Assignment) -> Decision:
    """Decide one assignment against our record of the worker's session. The rules, in order:

    1. not Submitted (already approved or rejected)      -> none
    2. no session of this worker in this study           -> reject: no record of completing the study
    3. the session was taken under another assignment    -> reject: one paid assignment per person
    4. screened out (failed the A/V check)               -> approve: the screening is paid
    5. session not completed (active, abandoned)         -> reject: no record of completing the study
    6. completion code differs from the session's code   -> reject: wrong code
    7. session excluded by a quality rule (or by hand)   -> reject, quoting the exclusion reasons
    8. otherwise                                         -> approve
    """
    if assignment.status != "Submitted":
        return Decision(NONE, f"already_{assignment.status.lower() or 'decided'}", "")
    participant = (
        Participant.objects.filter(
            study=study, source=Participant.Source.MTURK,
            external_id_hash=services.external_id_hash("mturk", assignment.worker_id),
        )
        .prefetch_related("exclusions")
        .first()
    )
    if participant is None:
        return Decision(REJECT, "unknown_worker", FEEDBACK_NO_RECORD)
    pid = str(participant.public_id)
    recorded_assignment = (participant.external_session or {}).get("assignment_id")
    if recorded_assignment and recorded_assignment != assignment.assignment_id:
        return Decision(REJECT, "other_assignment", FEEDBACK_OTHER_ASSIGNMENT, pid)
    if participant.status == Participant.Status.SCREENED_OUT:
        return Decision(APPROVE, "screened_out", FEEDBACK_SCREENED_OUT, pid)
    if participant.status != Participant.Status.COMPLETED:
        return Decision(REJECT, "not_completed", FEEDBACK_NO_RECORD, pid)
    if not participant.completion_code or assignment.completion_code.upper() != participant.completion_code.upper():
        return Decision(REJECT, "wrong_code", FEEDBACK_WRONG_CODE, pid)
    exclusions = sorted(participant.exclusions.all(), key=lambda e: e.rule)
    if exclusions:
        reasons = "; ".join(e.reason for e in exclusions)
        feedback = f"Your responses did not meet the study's quality rules: {reasons}."
        return Decision(REJECT, "excluded", feedback[:FEEDBACK_MAX_CHARS], pid)
    return Decision(APPROVE, "completed", FEEDBACK_THANKS, pid)


def approve(client, assignment_id: str, feedback: str = FEEDBACK_THANKS) -> None:
    client.approve_assignment(AssignmentId=assignment_id, RequesterFeedback=feedback[:FEEDBACK_MAX_CHARS])


def reject(client, assignment_id: str, feedback: str) -> None:
    if not feedback.strip():
        raise RecruitingError("a rejection needs a reason the worker can read")
    client.reject_assignment(AssignmentId=assignment_id, RequesterFeedback=feedback[:FEEDBACK_MAX_CHARS])


def apply_decision(client, assignment: Assignment, decision: Decision) -> bool:
    """Send an approve or reject; returns False when there is nothing to send."""
    if decision.action == APPROVE:
        approve(client, assignment.assignment_id, decision.feedback)
    elif decision.action == REJECT:
        reject(client, assignment.assignment_id, decision.feedback)
    else:
        return False
    return True


# ------------------------------------------------------------------------------------------- money
def send_bonus(
    client, *, worker_id: str, assignment_id: str, amount: Decimal | float | str, reason: str, unique_token: str
) -> None:
    """Pay a bonus. MTurk refuses a second request with the same `unique_token` within 24 hours."""
    client.send_bonus(
        WorkerId=worker_id, BonusAmount=money(amount), AssignmentId=assignment_id, Reason=reason,
        UniqueRequestToken=unique_token,
    )


def bonus_token(study: Study, *, assignment_id: str, amount: str, earlier: int) -> str:
    """The same bonus (study, assignment, amount, how many came before) always gets the same token."""
    digest = hashlib.sha256(f"{study.public_token}|{assignment_id}|{amount}|{earlier}".encode()).hexdigest()
    return f"bonus-{digest[:40]}"


def bonus_pay(
    client,
    *,
    study: Study,
    worker_id: str,
    assignment_id: str,
    amount: Decimal | float | str,
    reason: str,
    sandbox: bool,
    again: bool = False,
) -> dict:
    """Pay one bonus, once, to a worker who has a session in this study; record it on the study.

    A bonus already recorded for the assignment is refused unless `again`; a retry after a failure that
    left no record reuses the same UniqueRequestToken, so MTurk does not pay twice within 24 hours.
    """
    amount = money(amount)
    if Decimal(amount) <= 0:
        raise RecruitingError("a bonus must be more than $0.00")
    if not reason.strip():
        raise RecruitingError("a bonus needs a reason: the worker reads it")
    participant = Participant.objects.filter(
        study=study, source=Participant.Source.MTURK,
        external_id_hash=services.external_id_hash("mturk", worker_id),
    ).first()
    if participant is None:
        raise RecruitingError(f"worker {worker_id} has no session in study {study.slug}; check the worker id")
    env = environment(sandbox)
    earlier = [b for b in recorded(study, sandbox=sandbox).get("bonuses", []) if b["assignment_id"] == assignment_id]
    if earlier and not again:
        last = earlier[-1]
        raise RecruitingError(
            f"a ${last['amount']} bonus was already sent for assignment {assignment_id} on {last['sent_at']}; "
            "add --again to send another"
        )
    token = bonus_token(study, assignment_id=assignment_id, amount=amount, earlier=len(earlier))
    send_bonus(client, worker_id=worker_id, assignment_id=assignment_id, amount=amount, reason=reason,
               unique_token=token)
    record = {"assignment_id": assignment_id, "participant": str(participant.public_id), "amount": amount,
              "reason": reason, "token": token, "sent_at": timezone.now().isoformat()}
    services.study_recruiting_append(study=study, keys=("mturk", env, "bonuses"), items=[record])
    return record


def account_balance(client) -> Decimal:
    """The requester's available balance in dollars (the sandbox always reports $10,000.00)."""
    return Decimal(client.get_account_balance()["AvailableBalance"])
