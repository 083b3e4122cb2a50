"""Participant pages: entry from a recruiting link, the current page, and the JSON endpoints that save
watch reports and answers. Nothing here names a condition, model or utterance; errors are friendly."""
from __future__ import annotations

import functools
import json
import re
from urllib.parse import urlencode

from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from .. import selectors, services
from ..recruiting import prolific
from ..models import Participant, Study

SESSION_KEY = "participant_sessions"  # {study public token: participant public id}
MTURK_PREVIEW = "ASSIGNMENT_ID_NOT_AVAILABLE"
# Every opaque token a participant sends (study, trial, video) is secrets.token_urlsafe (models.new_public_token).
# Anything else is "not found" before it reaches a query: a NUL byte, say, would fail inside PostgreSQL.
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_token(value) -> bool:
    return isinstance(value, str) and TOKEN_RE.fullmatch(value) is not None


def _study_or_404(field: str, token: str) -> Study:
    if not is_token(token):
        raise Http404("not a token")
    return get_object_or_404(Study, **{field: token})


def _message(request, title: str, text: str, status=200, **extra):
    return render(request, "studies/participant/message.html", {"title": title, "text": text, **extra}, status=status)


def _session_participant(request, study_token: str) -> Participant | None:
    """This browser's participant in the study, with its study and version (one query)."""
    public_id = request.session.get(SESSION_KEY, {}).get(study_token)
    if not public_id:
        return None
    return (
        Participant.objects.select_related("study", "version")
        .filter(public_id=public_id, study__public_token=study_token)
        .first()
    )


def _session_light(request, study_token: str) -> selectors.SessionParticipant | None:
    """The same participant, as the few facts the trial endpoints need (one hand-written query)."""
    public_id = request.session.get(SESSION_KEY, {}).get(study_token)
    return selectors.session_participant(public_id, study_token) if public_id else None


def _remember(request, study: Study, participant: Participant) -> None:
    sessions = dict(request.session.get(SESSION_KEY, {}))
    sessions[study.public_token] = str(participant.public_id)
    request.session[SESSION_KEY] = sessions
    request.session.cycle_key()  # a new session id whenever a participant is bound to this browser


def _recruiting_source(request, study: Study):
    """(source, external id, session facts) from the recruiting service's URL parameters."""
    q = request.GET
    if q.get("PROLIFIC_PID"):
        return "prolific", q["PROLIFIC_PID"], {"study_id": q.get("STUDY_ID", ""), "session_id": q.get("SESSION_ID", "")}
    if q.get("workerId") and q.get("assignmentId"):
        return "mturk", q["workerId"], {
            "assignment_id": q["assignmentId"], "hit_id": q.get("hitId", ""),
            "submit_to": q.get("turkSubmitTo", ""),
        }
    if q.get("mode") == "pilot" and q.get("key") == services.pilot_key(study):
        return "pilot", None, {}
    if q.get("mode") == "bot" and q.get("key") == services.pilot_key(study):
        return "bot", q.get("bot_id"), {}
    return "direct", None, {}


@never_cache
@require_GET
def entry(request, study_token: str):
    study = _study_or_404("public_token", study_token)
    if any("\x00" in key + value for key, values in request.GET.lists() for value in values):
        # the recruiting service's ids are stored as given, and no database column takes a NUL byte
        return _message(request, "Link not valid", "This link is not valid. Please check the link you were given.",
                        status=400)
    if request.GET.get("assignmentId") == MTURK_PREVIEW:
        spec = study.current_version.spec
        return render(request, "studies/participant/mturk_preview.html", {"study": study, "spec": spec})
    source, external_id, facts = _recruiting_source(request, study)
    existing = _session_participant(request, study_token)
    if existing and not external_id:
        # The same browser again: back to its own session, whatever state it is in (a finished session
        # shows its completion page; it never starts a second one).
        return HttpResponseRedirect(reverse("take", args=[study_token]))
    try:
        participant, _ = services.participant_start(
            study=study, source=source, external_id=external_id, external_session=facts,
            user_agent=request.META.get("HTTP_USER_AGENT", ""),
        )
    except services.StudyUnavailable as exc:
        return _message(request, "Thank you for your interest", exc.message, status=200 if exc.code == "full" else 403)
    _remember(request, study, participant)
    take_url = reverse("take", args=[study_token])
    if request.GET:
        take_url += "?" + urlencode({"e": request.GET.urlencode()})
    return HttpResponseRedirect(take_url)


@never_cache
@require_GET
def lab_entry(request, lab_token: str):
    study = _study_or_404("lab_token", lab_token)
    seat = request.GET.get("id", "").strip() or None  # an optional participant code typed by the experimenter
    try:
        participant, _ = services.participant_start(
            study=study, source="lab", external_id=seat, user_agent=request.META.get("HTTP_USER_AGENT", "")
        )
    except services.StudyUnavailable as exc:
        return _message(request, "Thank you for your interest", exc.message, status=403)
    _remember(request, study, participant)
    return HttpResponseRedirect(reverse("take", args=[study.public_token]))


def _require_participant(request, study_token: str):
    participant = _session_participant(request, study_token)
    if participant is None:
        raise Http404("no session")
    return participant.study, participant


def _completion_context(participant: Participant, code: str) -> dict:
    """The code to show and, for Prolific and MTurk, how to hand it back to the service."""
    facts = participant.external_session or {}
    ctx = {"code": code}
    if participant.source == Participant.Source.PROLIFIC:
        ctx["redirect"] = prolific.completion_url(code)
    if participant.source == Participant.Source.MTURK and facts.get("submit_to"):
        ctx["mturk_submit"] = facts["submit_to"].rstrip("/") + "/mturk/externalSubmit"
        ctx["assignment_id"] = facts.get("assignment_id", "")
    return ctx


def _likert_points(question: dict) -> tuple[list[dict], bool]:
    """A likert scale's points, and whether each carries its own label: so when the spec gives one label per
    point (an empty one leaves that point bare); else the page shows the two end labels under the scale."""
    points = question.get("points", 0)
    labels = question.get("labels") or []
    per_point = points > 0 and len(labels) == points
    return [{"value": p, "label": labels[p - 1] if per_point else ""} for p in range(1, points + 1)], per_point


@never_cache
@require_GET
def take(request, study_token: str):
    light = _session_light(request, study_token)
    if light is not None and light.status == Participant.Status.ACTIVE and \
            light.spec["pages"][light.page_index]["type"] in ("training", "trials"):
        return _trial_page(request, study_token, light)  # most requests: one trial after another
    try:
        if light is None:
            raise Http404("no session")
        study, participant = _require_participant(request, study_token)
    except Http404:
        # Inside MTurk's frame some browsers refuse the session cookie: offer the study in a tab of its own,
        # where it is first-party, with the same entry parameters.
        entry_query = request.GET.get("e", "")
        new_tab = reverse("entry", args=[study_token]) + ("?" + entry_query if entry_query else "")
        return _message(request, "Session not found",
                        "We could not find your session in this browser. If this page is shown inside another "
                        "site, your browser may be blocking its cookies: open the study in a new tab.",
                        status=404, new_tab=new_tab)
    if participant.status == Participant.Status.SCREENED_OUT:
        # Recruited participants are paid for the screening: they get the study's screened-out code.
        recruited = participant.source in (Participant.Source.PROLIFIC, Participant.Source.MTURK)
        hand_back = _completion_context(participant, study.screened_out_code) if recruited else {}
        return _message(request, "Thank you", "Unfortunately your audio or video check did not succeed, so this "
                        "study cannot continue. You will not be penalised.", **hand_back)
    if participant.status == Participant.Status.ABANDONED:
        return _message(request, "Session expired", "This session was inactive for too long and has ended.")
    where = selectors.position(participant)
    ctx = {"study": study, "participant": participant, "progress_done": where.done,
           "progress_total": where.total, "study_token": study_token}
    page = selectors.current_page(participant)
    ctx["page"] = page
    ctx["page_index"] = participant.page_index
    kind = page["type"]
    if kind == "completion":
        ctx.update(_completion_context(participant, participant.completion_code))
        return render(request, "studies/participant/completion.html", ctx)
    if kind in ("training", "trials"):  # only if the participant moved on between this view's two queries
        return _trial_page(request, study_token, _session_light(request, study_token))
    if kind == "av_check":
        ctx["av_stimulus"] = selectors.av_check_stimulus(participant.version.spec)
    ctx["page_error"] = request.session.pop("page_error", None)
    return render(request, f"studies/participant/{kind}.html", ctx)


def _trial_page(request, study_token: str, participant: selectors.SessionParticipant):
    """The current trial of an active participant on a training or trials page: hand-written SQL all the way
    (selectors.position, services.trial_mark_shown), since every trial of every participant passes here."""
    where = selectors.position(participant) if participant is not None else None
    trial = where.trial if where is not None else None
    if trial is None:  # cannot happen with a valid plan; fail soft for the participant
        return _message(request, "Please wait", "Loading the next page failed; please reload.", status=500)
    services.trial_mark_shown(trial=trial)
    question = participant.spec["questions"][trial.question]
    points, labelled = _likert_points(question)
    return render(request, "studies/participant/trial.html", {
        "progress_done": where.done, "progress_total": where.total, "study_token": study_token,
        "page": participant.spec["pages"][participant.page_index], "page_index": participant.page_index,
        "trial": trial, "question": question, "slots": where.slots, "references": where.references,
        "play_s": where.play_s, "likert_points": points, "likert_labelled": labelled,
    })


@never_cache
@require_POST
def page_post(request, study_token: str, page_index: int):
    try:
        study, participant = _require_participant(request, study_token)
    except Http404:
        return _message(request, "Session not found", "Please open the study link again.", status=404)
    try:
        services.page_submit(participant=participant, page_index=page_index, data=request.POST.dict())
    except services.ServiceError as exc:
        request.session["page_error"] = exc.message
    return HttpResponseRedirect(reverse("take", args=[study_token]))


def _json_body(request) -> dict:
    if request.content_type != "application/json":
        raise services.ServiceError("Send JSON (Content-Type: application/json).")
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise services.ServiceError("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise services.ServiceError("The request body must be a JSON object.")
    return body


def participant_api(view):
    """A participant's JSON endpoint: POST only, never cached; the view gets (request, participant, body),
    the participant a selectors.SessionParticipant, and returns (payload, status). No session is a 403; a
    refused request is its ServiceError as JSON."""

    @never_cache
    @require_POST
    @functools.wraps(view)
    def wrapper(request, study_token: str):
        participant = _session_light(request, study_token)
        if participant is None:
            return JsonResponse({"ok": False, "error": "no_session", "message": "Please open the study link again."},
                                status=403)
        try:
            payload, status = view(request, participant, _json_body(request))
        except services.ServiceError as exc:
            return JsonResponse({"ok": False, "error": exc.code, "message": exc.message}, status=exc.status)
        return JsonResponse({"ok": True, **payload}, status=status)

    return wrapper


def _trial_token(body: dict) -> str:
    trial = body.get("trial")
    if not is_token(trial):
        raise services.NotFound("That trial is not part of your session.")
    return trial


@participant_api
def watch(request, participant, body):
    slot = body.get("slot")
    if isinstance(slot, bool) or not isinstance(slot, int):  # before the trial's token: a body without both is a 400
        raise services.ServiceError("slot must be a whole number.")
    ended = services.watch_record(participant=participant, trial_public_id=_trial_token(body),
                                  slot=slot, report=body)
    return {"ended": ended}, 200


@participant_api
def answer(request, participant, body):
    _, created = services.trial_answer(
        participant=participant,
        trial_public_id=_trial_token(body),
        submission_id=str(body.get("submission_id", "")),
        answers=body.get("answers"),
        answer_ms=body.get("answer_ms"),
        watch=body.get("watch"),
    )
    next_page = reverse("take", args=[request.resolver_match.kwargs["study_token"]])
    return {"saved": created, "next": next_page}, 201 if created else 200
