"""Writes: every action that changes the study's data, one function each (HackSoft style).

Views, commands, admin and tasks call these; they hold the rules that span rows. Errors raised here are
ServiceError subclasses whose message is safe to show a participant (no names of conditions, models or
utterances, no stack traces).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import random
import secrets
import shutil
import statistics
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from . import design, rawsql, selectors
from .models import (
    Condition,
    Corpus,
    Exclusion,
    Participant,
    Response,
    Stimulus,
    Study,
    StudyMember,
    StudyVersion,
    Trial,
    TrialStimulus,
    Utterance,
    WatchRecord,
    new_completion_code,
    new_public_token,
)
from .rendering import RenderRequestError, freeze_variants
from .spec import BUILT_IN_CONDITIONS, SpecError, SpecProblem, parse_spec, treatments

if TYPE_CHECKING:
    from render.checks import StimulusFacts

# A 'video ended' report is refused when it arrives sooner than this share of the clip's duration after
# the trial page was first served (plus a small allowance for clock granularity).
MIN_PLAY_SHARE = 0.9
PLAY_ALLOWANCE_S = 0.25
NON_DATA_SOURCES = Participant.NON_DATA_SOURCES


class ServiceError(Exception):
    status = 400
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class StudyUnavailable(ServiceError):
    status = 403
    code = "unavailable"


# ---------------------------------------------------------------------------------------------- ids
def external_id_hash(source: str, raw_id: str) -> str:
    """Keyed hash of a recruiting service's worker id; the raw id is never stored."""
    key = settings.PARTICIPANT_ID_HMAC_KEY.encode()
    return hmac.new(key, f"{source}:{raw_id.strip()}".encode(), hashlib.sha256).hexdigest()


def pilot_key(study: Study) -> str:
    key = settings.SECRET_KEY.encode()
    return hmac.new(key, f"pilot:{study.public_token}".encode(), hashlib.sha256).hexdigest()[:24]


# ------------------------------------------------------------------------------------------ stimuli
def stimulus_register(
    *,
    utterance: Utterance,
    condition: Condition,
    embodiment: str,
    source_path: Path,
    variant: str = "",
    recipe: dict | None = None,
    is_placeholder: bool = False,
    expected_answer: dict | None = None,
    checked: StimulusFacts | None = None,
) -> Stimulus:
    """Check a video with the platform's ffprobe rules and store it under an opaque token, as the cell's
    stimulus in `variant` (the key of the render settings it was made with, studies/variants.py; "" for the
    defaults and for videos that no render settings decide).

    Idempotent: the same file for the same cell and variant returns the existing stimulus, also when another
    process registers it at the same moment (the unique constraint decides; the loser's copy is removed).
    A different file for a cell and variant that already has one is refused (stimuli that studies use are
    never silently replaced).

    `checked` are the facts of a check the caller ran on this very file moments ago (the encoder checks what
    it writes); they stand in for a second check when the file's SHA-256 still matches them.
    """
    from render.checks import check_stimulus, sha256_of

    facts = checked if checked is not None and sha256_of(source_path) == checked.sha256 else \
        check_stimulus(source_path)
    cell = {"utterance": utterance, "condition": condition, "embodiment": embodiment, "variant": variant}
    existing = Stimulus.objects.filter(**cell).first()
    if existing:
        return _same_stimulus_or_conflict(existing, facts.sha256)
    token = secrets.token_urlsafe(16)
    rel = Path("stimuli") / f"{token}.mp4"
    dest = Path(settings.MEDIA_ROOT) / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{token}.tmp")
    try:
        shutil.copyfile(source_path, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    try:
        with transaction.atomic():
            return Stimulus.objects.create(
                token=token,
                **cell,
                file=str(rel),
                sha256=facts.sha256,
                size_bytes=facts.size_bytes,
                duration_s=facts.duration_s,
                audio_duration_s=facts.audio_duration_s,
                width=facts.width,
                height=facts.height,
                fps=facts.fps,
                video_codec=facts.video_codec,
                audio_codec=facts.audio_codec,
                is_placeholder=is_placeholder,
                expected_answer=expected_answer,
                recipe=recipe or {},
            )
    except IntegrityError:
        dest.unlink(missing_ok=True)
        existing = Stimulus.objects.filter(**cell).first()
        if existing is None:
            raise
        return _same_stimulus_or_conflict(existing, facts.sha256)


def _same_stimulus_or_conflict(existing: Stimulus, sha256: str) -> Stimulus:
    if existing.sha256 == sha256:
        return existing
    variant = f" (variant {existing.variant})" if existing.variant else ""
    raise Conflict(
        f"a different stimulus already exists for {existing.utterance} / {existing.condition} / "
        f"{existing.embodiment}{variant} (token {existing.token}); it is kept"
    )


# ------------------------------------------------------------------------------------------ studies
def _study_stimuli_problems(spec: dict) -> list[SpecProblem]:
    """Everything the database must hold before this spec can run, as fixable problems."""
    problems = []
    stim = spec["stimuli"]
    corpus = Corpus.objects.filter(name=stim["corpus"]).first()
    if corpus is None:
        names = ", ".join(Corpus.objects.values_list("name", flat=True)) or "none yet"
        return [SpecProblem("stimuli.corpus", f"corpus `{stim['corpus']}` does not exist",
                            f"import it with `manage.py import_corpus` or use one of: {names}")]
    known = {c.name: c for c in Condition.objects.all()}
    definitions = stim.get("condition_definitions", {})
    for i, cond in enumerate(stim["conditions"]):
        if cond in definitions:
            existing = known.get(cond)
            wanted = definitions[cond]
            if existing is not None and (existing.kind, existing.params) != (wanted["kind"], wanted["params"]):
                problems.append(SpecProblem(
                    f"stimuli.conditions[{i}]", f"condition `{cond}` already exists as {existing.kind} "
                    f"{existing.params or ''} and this file defines it differently",
                    "give the new definition another name (a condition's stimuli never change meaning)"))
        elif cond not in known and cond not in BUILT_IN_CONDITIONS:
            problems.append(SpecProblem(f"stimuli.conditions[{i}]", f"condition `{cond}` does not exist",
                                        f"define it (`{{name: {cond}, kind: model, model: NAME}}`) or use one of: "
                                        f"{', '.join(sorted(set(known) | set(BUILT_IN_CONDITIONS)))}"))
    utterances = study_utterance_names(spec)
    all_names = set(corpus.utterances.values_list("name", flat=True))
    if stim["utterances"] != "all":
        for i, name in enumerate(stim["utterances"]):
            if name not in all_names:
                problems.append(SpecProblem(f"stimuli.utterances[{i}]", f"utterance `{name}` is not in corpus `{corpus}`",
                                            "check the name against the corpus"))
    if problems:
        return problems
    if not utterances:
        return [SpecProblem("stimuli.utterances", f"corpus `{corpus}` has no utterances with stimuli",
                            "render the study's conditions first (`manage.py render_study`)")]
    have = set(
        Stimulus.objects.filter(selectors.in_study_variant(spec), utterance__corpus=corpus).values_list(
            "utterance__name", "condition__name", "embodiment", "is_placeholder"
        )
    )
    have_cells = {(u, c, e) for u, c, e, _ in have}
    missing = [(u, c, e) for u in utterances for c, e in treatments(spec) if (u, c, e) not in have_cells]
    if missing:
        sample = ", ".join(f"{u}/{c}/{e}" for u, c, e in missing[:5])
        problems.append(SpecProblem("stimuli", f"{len(missing)} stimuli are missing (e.g. {sample})",
                                    "render them (`manage.py render_study`) or remove those conditions"))
    placeholders = [x for x in have if x[3] and x[0] in utterances and (x[1], x[2]) in treatments(spec)]
    if placeholders and not stim["allow_placeholders"]:
        problems.append(SpecProblem("stimuli.allow_placeholders",
                                    f"{len(placeholders)} of the stimuli are placeholder clips",
                                    "render real stimuli, or set `allow_placeholders: true` for a dry run"))
    for msg in design.check_balance(spec, len(utterances)):
        problems.append(SpecProblem("stimuli.utterances", msg, "see the numbers above"))
    pages = [p["type"] for p in spec["pages"]]
    needs_attention = any(p["type"] == "trials" and p["attention_checks"] for p in spec["pages"])
    if needs_attention and not selectors.attention_stimuli(spec, corpus):
        problems.append(SpecProblem("pages", "attention checks are asked for but the corpus has no "
                                    "attention-check clips for these embodiments and render settings",
                                    "make them (`manage.py render_study`; `manage.py demo` shows how) or set "
                                    "attention_checks: 0"))
    if "av_check" in pages and not selectors.av_check_stimulus(spec):
        problems.append(SpecProblem("pages", "an av_check page is listed but the corpus has no A/V check clip "
                                    "for these render settings",
                                    "make one (`manage.py render_study`) or remove the av_check page"))
    return problems


def study_utterance_names(spec: dict) -> list[str]:
    """The rated utterances: as frozen when the version was stored; else those listed, or every corpus
    utterance that is not a check clip."""
    stim = spec["stimuli"]
    if "resolved_utterances" in stim:
        return stim["resolved_utterances"]
    if stim["utterances"] != "all":
        return sorted(stim["utterances"])
    # By the utterance's role, as render_study chooses what to render: an attention check is rendered on
    # some rated utterances, which must not drop them from the study.
    return sorted(selectors.speech_utterances(Utterance.objects.filter(corpus__name=stim["corpus"]))
                  .values_list("name", flat=True))


def study_validate(*, text: str) -> dict:
    """The normalised spec, if the YAML is valid and the database holds all it needs; else SpecError."""
    spec = parse_spec(text)
    # Freeze the variants of its videos (render defaults that change later must not send it to other videos;
    # a custom avatar counts by its files' contents), then the rated utterances: a corpus that grows later
    # must not change a running study's design.
    try:
        freeze_variants(spec)
    except RenderRequestError as exc:
        raise SpecError([SpecProblem("stimuli.render.avatar", str(exc),
                                     "fix the avatar's files (docs/avatar.md), or leave `avatar` out for the "
                                     "built-in one")]) from None
    problems = _study_stimuli_problems(spec)
    if problems:
        raise SpecError(problems)
    spec["stimuli"]["resolved_utterances"] = study_utterance_names(spec)
    return spec


def study_load(*, text: str, owner=None) -> tuple[StudyVersion, bool]:
    """Validate a study YAML against the spec rules and the database; store it as the next version.

    Returns (version, created). Loading the same text again creates nothing. Raises SpecError.
    """
    spec = study_validate(text=text)
    with transaction.atomic():
        study, _ = Study.objects.select_for_update().get_or_create(
            slug=spec["slug"], defaults={"title": spec["title"], "owner": owner}
        )
        latest = study.versions.order_by("-number").first()
        if latest and latest.spec_yaml == text:
            return latest, False
        study.title = spec["title"]
        study.save(update_fields=["title"])
        version = StudyVersion.objects.create(
            study=study, number=(latest.number + 1) if latest else 1, spec_yaml=text, spec=spec
        )
    return version, True


def study_set_status(*, study: Study, status: str) -> Study:
    if status not in Study.Status.values:
        raise ServiceError(f"unknown status {status!r}; use one of {', '.join(Study.Status.values)}")
    study.status = status
    study.save(update_fields=["status"])
    return study


def study_share(*, study: Study, user, role: str | None) -> StudyMember | None:
    """Give a researcher a role on the study (or change it); role None takes them off. The owner is not a member."""
    if study.owner_id is not None and user.pk == study.owner_id:
        raise ServiceError(f"{user.username} owns {study.slug}; an owner has every right already")
    if role is None:
        StudyMember.objects.filter(study=study, user=user).delete()
        return None
    if role not in StudyMember.Role.values:
        raise ServiceError(f"unknown role {role!r}; use one of {', '.join(StudyMember.Role.values)}")
    member, _ = StudyMember.objects.update_or_create(study=study, user=user, defaults={"role": role})
    return member


# ------------------------------------------------------------------------------------- participants
def participant_find(*, study: Study, public_id: str | None = None, source: str | None = None,
                     external_id: str | None = None) -> Participant:
    """One participant of the study, by the platform's id or by a recruiting service's worker id (matched
    through the keyed hash, as stored). ServiceError (code not_found) when there is none."""
    qs = Participant.objects.filter(study=study)
    if public_id:
        try:
            found = qs.filter(public_id=uuid.UUID(str(public_id))).first()
        except ValueError:
            raise ServiceError(f"{public_id!r} is not a participant id (a UUID, as in the responses CSV)") from None
        what = f"participant {public_id}"
    else:
        found = qs.filter(external_id_hash=external_id_hash(source, external_id)).first()
        what = f"{source} worker {external_id}"
    if found is None:
        raise ServiceError(f"no {what} in study {study.slug}", code="not_found")
    return found


def participant_forget(*, participant: Participant) -> dict:
    """Delete everything stored of one participant (on their request): responses, exclusions, trials with
    their videos' watch records, and the session itself. Returns what was deleted, by kind."""
    with transaction.atomic():
        participant = Participant.objects.select_for_update().get(pk=participant.pk)
        counts = {
            "responses": Response.objects.filter(participant=participant).delete()[0],
            "exclusions": Exclusion.objects.filter(participant=participant).delete()[0],
            "watch_records": WatchRecord.objects.filter(trial_stimulus__trial__participant=participant).delete()[0],
            "trials": Trial.objects.filter(participant=participant).count(),
        }
        participant.delete()  # cascades to the trials and their slots
    return counts


# Recruiting services that give a participant a time limit of their own, and where the spec keeps it (under
# `recruitment`). Prolific's maximum allowed time is set in Prolific's form, not in the spec.
SERVICE_TIME_LIMITS = {Participant.Source.MTURK: ("mturk", "assignment_duration_minutes")}


def session_idle_limits(study: Study) -> tuple[float, dict[str, float]]:
    """How long a session may go without a request before it is abandoned: the current spec's
    `recruitment.abandon_after_minutes`, and, per recruiting service with a time limit of its own, the longer
    of that and the service's limit. An MTurk worker keeps their assignment (and may come back and submit it)
    for `recruitment.mturk.assignment_duration_minutes` after accepting it, so their session is never taken
    from them sooner. A HIT keeps the duration of the version it was published with, so the longest of all
    the study's versions counts. One query."""
    columns = ["spec__recruitment__abandon_after_minutes"] + [
        "spec__recruitment__" + "__".join(keys) for keys in SERVICE_TIME_LIMITS.values()]
    rows = list(study.versions.order_by("-number").values_list(*columns))
    base = rows[0][0]
    limits = {}
    for i, source in enumerate(SERVICE_TIME_LIMITS, start=1):
        own = [row[i] for row in rows if isinstance(row[i], (int, float))]
        limits[source] = max([base, *own])
    return base, limits


def participants_reclaim_abandoned(*, study: Study) -> int:
    """Mark sessions idle longer than they may be (session_idle_limits) as abandoned; frees their cells."""
    base, limits = session_idle_limits(study)
    now = timezone.now()
    idle_too_long = Q(last_seen_at__lt=now - timedelta(minutes=base)) & ~Q(source__in=list(limits))
    for source, minutes in limits.items():
        idle_too_long |= Q(source=source, last_seen_at__lt=now - timedelta(minutes=minutes))
    return Participant.objects.filter(idle_too_long, study=study, status=Participant.Status.ACTIVE).update(
        status=Participant.Status.ABANDONED)


def _choose_cell(study: Study, spec: dict, rng: random.Random, *, source: str) -> int | None:
    """The counterbalancing cell of a new session; None when the quota is met.

    A data session takes the least-filled cell, counting valid completions and the live claims of other data
    sessions, within the quota. Sessions that are not data never touch those counts, so they take no one's
    place: a bot takes the cell least used by the study's other bots (a crowd of bots still covers the design
    evenly, as the demo's report needs), a preview or pilot a random cell.
    """
    n_cells = design.cell_count(spec)
    if source == Participant.Source.BOT:
        used = Counter(dict(
            Participant.objects.filter(study=study, source=source,
                                       status__in=(Participant.Status.ACTIVE, Participant.Status.COMPLETED))
            .values_list("cell").annotate(n=Count("id")).order_by()
        ))
        lowest = min(used[c] for c in range(n_cells))
        return rng.choice([c for c in range(n_cells) if used[c] == lowest])
    if source in NON_DATA_SOURCES:
        return rng.randrange(n_cells)
    per_cell = -(-spec["recruitment"]["quota"] // n_cells)  # ceil
    done = Counter(selectors.valid_completions(study).values_list("cell", flat=True))
    if sum(done.values()) >= spec["recruitment"]["quota"]:
        return None
    claims = Counter(
        Participant.objects.filter(study=study, status=Participant.Status.ACTIVE)
        .exclude(source__in=NON_DATA_SOURCES)
        .values_list("cell", flat=True)
    )
    open_cells = [c for c in range(n_cells) if done[c] < per_cell] or list(range(n_cells))
    lowest = min(done[c] + claims[c] for c in open_cells)
    return rng.choice([c for c in open_cells if done[c] + claims[c] == lowest])


def participant_start(
    *,
    study: Study,
    source: str,
    external_id: str | None = None,
    external_session: dict | None = None,
    user_agent: str = "",
) -> tuple[Participant, bool]:
    """Start a session (or resume the person's active one). Returns (participant, resumed).

    Raises StudyUnavailable when the study is not open, full, or the person already took part.
    """
    if source not in Participant.Source.values:
        raise ServiceError(f"unknown participant source {source!r}")
    is_trial_run = source in Participant.TRIAL_RUN_SOURCES
    if study.status != Study.Status.LIVE and not is_trial_run:
        raise StudyUnavailable("This study is not open at the moment.", code="closed")
    id_hash = external_id_hash(source, external_id) if external_id else None
    resumed = None
    with transaction.atomic():
        # Serialise starts within one study so two arrivals cannot both take the last free cell.
        study = Study.objects.select_for_update().get(pk=study.pk)
        if id_hash:
            earlier = Participant.objects.filter(study=study, external_id_hash=id_hash).first()
            if earlier is not None:
                if earlier.status != Participant.Status.ACTIVE:
                    raise StudyUnavailable("You have already taken part in this study; thank you.", code="duplicate")
                if external_session and external_session != earlier.external_session:
                    # e.g. an MTurk worker who returned the HIT and accepted another assignment:
                    # the completion form must post the assignment they hold now.
                    # A new assignment's time runs from now: so does the session's idle time (abandonment).
                    earlier.external_session = external_session
                    earlier.last_seen_at = timezone.now()
                    earlier.save(update_fields=["external_session", "last_seen_at"])
                resumed = earlier
        if resumed is None:
            version = study.current_version
            spec = version.spec
            participants_reclaim_abandoned(study=study)
            seed = secrets.randbits(48)
            rng = random.Random(seed)
            cell = _choose_cell(study, spec, rng, source=source)
            if cell is None:
                raise StudyUnavailable("This study has all the participants it needs; thank you.", code="full")
            participant = Participant.objects.create(
                study=study,
                version=version,
                source=source,
                external_id_hash=id_hash,
                external_session=external_session or {},
                cell=cell,
                seed=seed,
                user_agent=user_agent.replace("\x00", "")[:300],  # no text column takes a NUL byte
            )
    # The trials are made after the study's lock is released, so arrivals queue only for the cell choice.
    # A resumed session gets them here too if it has none: the request that started it can die between its
    # two transactions (a web worker killed), and the person's retry of the link lands here.
    # Should making them fail, the session is closed as abandoned (its cell is free again) and the person's
    # id is released, so our failure never counts as their having taken part.
    participant = resumed or participant
    making = False
    try:
        with transaction.atomic():
            if resumed is not None:
                # One maker at a time: two retries arriving together must not both make the trials.
                Participant.objects.select_for_update().only("pk").get(pk=participant.pk)
                if Trial.objects.filter(participant=participant).exists():
                    return participant, True
            making = True
            _create_trials(participant, participant.version.spec)
    except Exception:
        if making:
            Participant.objects.filter(pk=participant.pk).update(
                status=Participant.Status.ABANDONED, external_id_hash=None
            )
        raise
    return participant, resumed is not None


def _create_trials(participant: Participant, spec: dict) -> None:
    corpus = Corpus.objects.get(name=spec["stimuli"]["corpus"])
    utterances = study_utterance_names(spec)
    cells = treatments(spec)
    # Only the videos made for the study's render settings (its variant), never another study's.
    in_variant = selectors.in_study_variant(spec)
    have = set(
        Stimulus.objects.filter(in_variant, utterance__corpus=corpus, condition__name__in=[c for c, _ in cells])
        .values_list("utterance__name", "condition__name", "embodiment")
    )
    # Practice uses utterances outside the rated ones when the corpus has some with every treatment's
    # stimulus; otherwise the rated ones (whose stimuli the study's validation guarantees).
    special = (Condition.Kind.ATTENTION_CHECK, Condition.Kind.AV_CHECK)
    # An utterance with a check clip in any variant is a check clip's speech or rated somewhere: never practice.
    candidates = set(corpus.utterances.exclude(stimuli__condition__kind__in=special).values_list("name", flat=True))
    training = sorted(u for u in candidates - set(utterances) if all((u, c, e) in have for c, e in cells))
    checks = selectors.attention_check_stimuli(spec, corpus)
    plan = design.plan_trials(
        spec,
        utterances=utterances,
        training_utterances=training,
        attention_stimuli=sorted((s.utterance.name, s.condition.name, s.embodiment) for s in checks),
        cell=participant.cell,
        seed=participant.seed,
    )
    needed = {(ps.utterance, ps.condition, ps.embodiment) for planned in plan for ps in planned.slots}
    lookup = {
        (u, c, e): pk
        for pk, u, c, e in Stimulus.objects.filter(
            in_variant, utterance__corpus=corpus, utterance__name__in={u for u, _, _ in needed}
        ).exclude(condition__kind=Condition.Kind.ATTENTION_CHECK)
        .values_list("pk", "utterance__name", "condition__name", "embodiment")
    }
    lookup.update({(s.utterance.name, s.condition.name, s.embodiment): s.pk for s in checks})
    trials = Trial.objects.bulk_create([
        Trial(participant=participant, page_index=planned.page_index, position=position, kind=planned.kind,
              question=planned.question)
        for position, planned in enumerate(plan)
    ])
    slots = []
    for trial, planned in zip(trials, plan, strict=True):
        for slot_index, ps in enumerate(planned.slots):
            stimulus_id = lookup.get((ps.utterance, ps.condition, ps.embodiment))
            if stimulus_id is None:
                raise ServiceError("This study is not ready yet (a video is missing).", code="not_ready")
            # The open reference gets its own token, so its URL differs from the hidden reference's.
            token = new_public_token() if ps.role == TrialStimulus.Role.REFERENCE else None
            slots.append(TrialStimulus(trial=trial, stimulus_id=stimulus_id, slot=slot_index, role=ps.role,
                                       token=token))
    TrialStimulus.objects.bulk_create(slots)


def _touch(participant: Participant) -> None:
    participant.last_seen_at = timezone.now()


def _advance(participant: Participant) -> None:
    """Move to the next page; entering the completion page finishes the session."""
    pages = participant.version.spec["pages"]
    participant.page_index = min(participant.page_index + 1, len(pages) - 1)
    # A training/trials page without trials (never the case in a valid plan) would be skipped here.
    if pages[participant.page_index]["type"] == "completion":
        _finish(participant)


def page_submit(*, participant: Participant, page_index: int, data: dict) -> Participant:
    """Submit a non-trial page (consent, instructions, A/V check, demographics)."""
    failed_attempt = None
    with transaction.atomic():
        participant = Participant.objects.select_for_update().get(pk=participant.pk)
        if participant.status != Participant.Status.ACTIVE:
            raise Conflict("This session has ended.", code="ended")
        if page_index != participant.page_index:
            # A double-submitted form: the page was already done. Not an error for the participant.
            if page_index < participant.page_index:
                return participant
            raise Conflict("Please finish the current page first.", code="wrong_page")
        page = participant.version.spec["pages"][page_index]
        kind = page["type"]
        now = timezone.now().isoformat()
        if kind in ("training", "trials", "completion"):
            raise Conflict("This page is answered video by video.", code="wrong_page")
        if kind == "consent":
            if data.get("agree") not in ("yes", True, "on", "1"):
                raise ServiceError("Please tick the box to agree before continuing.", code="consent_required")
            participant.page_data["consent_at"] = now
        elif kind == "av_check":
            expected = selectors.av_check_stimulus(participant.version.spec)
            typed = "".join(ch for ch in str(data.get("digits", "")) if ch.isdigit())
            attempts = participant.page_data.get("av_check_attempts", 0) + 1
            participant.page_data["av_check_attempts"] = attempts
            if typed != expected.expected_answer["digits"]:
                if attempts >= page["max_attempts"]:
                    participant.status = Participant.Status.SCREENED_OUT
                    participant.completed_at = timezone.now()
                    participant.page_data["screened_out"] = "av_check"
                    _touch(participant)
                    participant.save()
                    return participant
                participant.save(update_fields=["page_data"])
                # Raised after the transaction commits, so the attempt is counted.
                failed_attempt = ServiceError(
                    "Those digits do not match. Check that your sound is on and try again.", code="av_check_failed"
                )
            else:
                participant.page_data["av_check_passed_at"] = now
        elif kind == "demographics":
            participant.demographics = _clean_demographics(page, data)
        if failed_attempt is None:
            participant.page_data[f"page_{page_index}_done_at"] = now
            _touch(participant)
            _advance(participant)
            participant.save()
    if failed_attempt is not None:
        raise failed_attempt
    return participant


def _clean_demographics(page: dict, data: dict) -> dict:
    out = {}
    for name in page["fields"]:
        raw = str(data.get(name, "")).replace("\x00", "").strip()[:100]  # no JSON column takes a NUL byte
        if name == "age" and raw:
            if not raw.isdecimal() or not (16 <= int(raw) <= 110):
                raise ServiceError("Please enter your age as a number (16-110), or leave it empty.", code="bad_age")
            out[name] = int(raw)
        elif raw:
            out[name] = raw
        elif page["required"]:
            raise ServiceError(f"Please answer: {name.replace('_', ' ')}.", code="required")
    return out


# ------------------------------------------------------------------------------------------- trials
def trial_mark_shown(*, trial) -> None:
    """Record when the trial's page was first served: the earliest moment its videos could start. `trial` is
    a Trial or a selectors.ShownTrial; one statement, and none once the trial has been shown."""
    if trial.first_shown_at is None:
        now = timezone.now()
        rawsql.execute(f"UPDATE {rawsql.T.Trial} SET first_shown_at = %s WHERE id = %s AND first_shown_at IS NULL",
                       [rawsql.time_param(now), trial.pk])
        # Another request of the same participant may have got there first; either time is within a request.
        trial.first_shown_at = now


WATCH_INT_FIELDS = ("seeks", "pauses", "replays", "hidden_ms", "playback_errors")


def watch_record(*, participant, trial_public_id: str, slot, report: dict) -> bool:
    """Store what the player reports about one video; 'ended' is checked against the server's clock.

    `participant` is a Participant or a selectors.SessionParticipant; `slot` is the client's value, checked
    here. Returns whether the video counts as ended. Counters only grow and `ended` stays set: a stale report
    arriving late never lowers them. Two statements (rawsql.py): the trial and video, then one insert-or-raise.
    """
    if isinstance(slot, bool) or not isinstance(slot, int):
        raise ServiceError("slot must be a whole number.")
    if not 0 <= slot < 2**31:  # no screen has such a slot, and SQLite cannot even bind a number past 2**63
        raise NotFound("That video is not part of your session.")
    T = rawsql.T
    row = rawsql.fetch_one(
        f"SELECT ts.id, t.answered_at, t.first_shown_at, st.duration_s FROM {T.TrialStimulus} ts "
        f"JOIN {T.Trial} t ON t.id = ts.trial_id JOIN {T.Stimulus} st ON st.id = ts.stimulus_id "
        f"WHERE t.public_id = %s AND t.participant_id = %s AND ts.slot = %s",
        [str(trial_public_id), participant.pk, slot],
    )
    if row is None:
        raise NotFound("That video is not part of your session.")
    ts_id, answered_at, first_shown_at, duration_s = row
    if answered_at is not None:
        raise Conflict("This trial is already answered.", code="answered")
    if first_shown_at is None:
        raise Conflict("This video has not been shown yet.", code="not_shown")
    clean = {}
    fraction = report.get("watched_fraction", 0.0)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (0.0 <= fraction <= 1.0):
        raise ServiceError("watched_fraction must be a number between 0 and 1.")
    clean["watched_fraction"] = float(fraction)
    for name in WATCH_INT_FIELDS:
        value = report.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not (0 <= value <= 10**8):
            raise ServiceError(f"{name} must be a whole number >= 0.")
        clean[name] = value
    ended = report.get("ended", False)
    if not isinstance(ended, bool):
        raise ServiceError("ended must be true or false.")
    now = timezone.now()
    if ended:
        earliest = duration_s * MIN_PLAY_SHARE - PLAY_ALLOWANCE_S
        if (now - rawsql.time_value(first_shown_at)).total_seconds() < earliest:
            raise Conflict("The video cannot have finished yet.", code="too_early")
    # The first report of a video inserts its row; a later one raises its counters (an upsert, so two reports
    # racing each other cannot fail on the unique trial_stimulus).
    names = ["trial_stimulus_id", "ended", "ended_at", *clean, "updated_at"]
    stamp = rawsql.time_param(now)
    values = [ts_id, ended, stamp if ended else None, *clean.values(), stamp]
    raise_counters = ", ".join(f"{n} = {rawsql.greatest(f'w.{n}', f'EXCLUDED.{n}')}" for n in clean)
    stored = rawsql.fetch_one(
        f"INSERT INTO {T.WatchRecord} AS w ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))}) "
        f"ON CONFLICT (trial_stimulus_id) DO UPDATE SET {raise_counters}, ended = w.ended OR EXCLUDED.ended, "
        f"ended_at = COALESCE(w.ended_at, EXCLUDED.ended_at), updated_at = EXCLUDED.updated_at RETURNING ended",
        values,
    )
    return bool(stored[0])


def _expected_answer_keys(question: dict, slots: list) -> list[tuple[str, int]]:
    items = [i["key"] for i in question["items"]]
    if question["type"] == "slider":
        rated = [s.slot for s in slots if s.role != TrialStimulus.Role.REFERENCE]
        return [(item, slot) for item in items for slot in rated]
    return [(item, 0) for item in items]


def _clean_answer(question: dict, answer: dict, slots: list) -> dict:
    """Validate one answer dict against the question; return Response field values."""
    qtype = question["type"]
    value = answer.get("value")
    if qtype == "likert":
        if isinstance(value, bool) or not isinstance(value, int) or not (1 <= value <= question["points"]):
            raise ServiceError(f"Please choose one of the {question['points']} points.", code="off_scale")
        return {"value": float(value), "stimulus_id": slots[0].stimulus_id}
    if qtype == "slider":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value <= 100):
            raise ServiceError("Slider values go from 0 to 100.", code="off_scale")
        stimulus_id = next(s.stimulus_id for s in slots if s.slot == answer["slot"])
        return {"value": float(value), "stimulus_id": stimulus_id}
    choice = answer.get("choice")
    allowed = ["A", "B"] + (["tie"] if question["allow_tie"] else [])
    if choice not in allowed:
        raise ServiceError(f"Please choose {' or '.join(allowed)}.", code="off_scale")
    strength = answer.get("strength")
    if question["strength"] and choice != "tie":
        if strength not in (1, 2):
            raise ServiceError("Please say how strong your preference is (1 = slightly, 2 = clearly).", code="off_scale")
    elif strength is not None:
        raise ServiceError("This question takes no strength.", code="off_scale")
    sign = {"A": -1, "B": 1, "tie": 0}[choice]
    chosen = None if choice == "tie" else slots[0 if choice == "A" else 1].stimulus_id
    return {"value": float(sign * (strength or 1)), "choice": choice, "strength": strength, "stimulus_id": chosen}


@dataclass(frozen=True)
class AnsweredTrial:
    """What trial_answer read and wrote of the trial."""

    id: int
    public_id: str
    position: int
    page_index: int
    answered_at: datetime
    submission_id: uuid.UUID


@dataclass(frozen=True)
class _Slot:
    slot: int
    role: str
    stimulus_id: int
    ended: bool


RESPONSE_COLUMNS = ("participant_id", "trial_id", "item", "slot", "stimulus_id", "value", "choice", "strength",
                    "answer_ms", "created_at")


MAX_WATCH_REPORTS = 16  # more videos than any page shows


def trial_answer(
    *, participant, trial_public_id: str, submission_id: str, answers: list, answer_ms: int,
    watch: list | None = None,
) -> tuple[AnsweredTrial, bool]:
    """Save every answer of one trial at once, idempotently. Returns (trial, created).

    `participant` is a Participant or a selectors.SessionParticipant. A retried POST with the same
    submission_id returns the saved trial (created=False) and writes nothing; a different submission for an
    answered trial is a Conflict. Answers are refused before every rated video of the trial has ended (as
    reported and checked in watch_record). `watch` is the page's final report of each of its videos (the same
    fields as a watch report, with `slot`), stored by watch_record before that check, so that the page need
    not send them apart when its videos end; an 'ended' the server's clock cannot believe yet is a Conflict
    (too_early) and nothing of the answer is saved. No lock is held: the trial is claimed by a conditional
    UPDATE, and the unique constraint on responses backs it up. The statements are hand-written (rawsql.py):
    two reads (and two per watch report), then the claim, the responses and the participant's position in one
    transaction.
    """
    try:
        submission_uuid = uuid.UUID(str(submission_id))
    except ValueError:
        raise ServiceError("submission_id must be a UUID.") from None
    if isinstance(answer_ms, bool) or not isinstance(answer_ms, int) or not (0 <= answer_ms <= 86_400_000):
        raise ServiceError("answer_ms must be a whole number of milliseconds.")
    if not isinstance(answers, list) or not all(isinstance(a, dict) for a in answers):
        raise ServiceError("answers must be a list of objects.")
    if watch is not None and not (isinstance(watch, list) and len(watch) <= MAX_WATCH_REPORTS
                                  and all(isinstance(w, dict) for w in watch)):
        raise ServiceError(f"watch must be a list of at most {MAX_WATCH_REPORTS} watch reports.")
    T = rawsql.T
    row = rawsql.fetch_one(
        f"SELECT t.id, t.position, t.page_index, t.question, t.answered_at, t.submission_id, "
        f"(SELECT COUNT(*) FROM {T.Trial} o WHERE o.participant_id = t.participant_id AND o.page_index = t.page_index "
        f"AND o.answered_at IS NULL AND o.position < t.position), "
        f"(SELECT COUNT(*) FROM {T.Trial} o WHERE o.participant_id = t.participant_id AND o.page_index = t.page_index "
        f"AND o.answered_at IS NULL AND o.position <> t.position) "
        f"FROM {T.Trial} t WHERE t.public_id = %s AND t.participant_id = %s",
        [str(trial_public_id), participant.pk],
    )
    if row is None:
        raise NotFound("That trial is not part of your session.")
    trial_id, position, page_index, question_key, answered_at, saved_submission, earlier_open, other_open = row
    if answered_at is not None:
        trial = AnsweredTrial(trial_id, str(trial_public_id), position, page_index,
                              rawsql.time_value(answered_at), rawsql.uuid_value(saved_submission))
        return _answered_again(trial, submission_uuid)
    if participant.status != Participant.Status.ACTIVE:
        raise Conflict("This session has ended.", code="ended")
    if page_index != participant.page_index:
        raise Conflict("This trial is not on the current page.", code="wrong_page")
    if earlier_open:
        raise Conflict("Please answer the trials in order.", code="out_of_order")
    try:
        # All or nothing: the watch facts sent with the answer are stored only if the answer is saved too.
        with transaction.atomic():
            for report in watch or ():
                try:
                    watch_record(participant=participant, trial_public_id=trial_public_id, slot=report.get("slot"),
                                 report=report)
                except Conflict as exc:
                    if exc.code == "answered":  # by a concurrent retry: answered again below, as for the claim
                        raise IntegrityError("answered meanwhile") from None
                    raise
            trial = _save_answers(participant, AnsweredTrial(trial_id, str(trial_public_id), position, page_index,
                                                             timezone.now(), submission_uuid),
                                  question_key, answers, answer_ms, other_open=bool(other_open))
    except IntegrityError:  # a concurrent retry of the same answer, or another submission, got there first
        saved = rawsql.fetch_one(f"SELECT answered_at, submission_id FROM {T.Trial} WHERE id = %s", [trial_id])
        trial = AnsweredTrial(trial_id, str(trial_public_id), position, page_index,
                              rawsql.time_value(saved[0]), rawsql.uuid_value(saved[1]))
        return _answered_again(trial, submission_uuid)
    return trial, True


def _save_answers(participant, trial: AnsweredTrial, question_key: str, answers: list, answer_ms: int, *,
                  other_open: bool) -> AnsweredTrial:
    """Inside trial_answer's transaction: check that every rated video ended and the answers fit the question,
    then claim the trial, store the responses and move the participant on. Returns the trial as saved."""
    T = rawsql.T
    slots = [_Slot(*r) for r in rawsql.fetch_all(
        f"SELECT ts.slot, ts.role, ts.stimulus_id, w.ended FROM {T.TrialStimulus} ts "
        f"LEFT JOIN {T.WatchRecord} w ON w.trial_stimulus_id = ts.id WHERE ts.trial_id = %s ORDER BY ts.slot",
        [trial.id],
    )]
    for s in slots:
        if s.role == TrialStimulus.Role.REFERENCE:
            continue  # the open reference is there to compare with; watching it is the participant's choice
        if not s.ended:
            raise Conflict("Please watch the video to the end before answering.", code="not_watched")
    question = selectors.spec_of(participant)["questions"][question_key]
    given = []
    for a in answers:
        item, slot = a.get("item"), a.get("slot", 0)
        if isinstance(slot, bool) or not isinstance(slot, int):
            raise ServiceError("slot must be a whole number.")
        given.append((item, slot))
    if sorted(given, key=str) != sorted(_expected_answer_keys(question, slots), key=str):
        raise ServiceError("Please answer every question on this page (once each).", code="incomplete")
    now = timezone.now()
    stamp = rawsql.time_param(now)
    values = []
    for a in answers:
        fields = {"choice": "", "strength": None, **_clean_answer(question, {**a, "slot": a.get("slot", 0)}, slots)}
        values += [participant.pk, trial.id, a["item"], a.get("slot", 0), fields["stimulus_id"], fields["value"],
                   fields["choice"], fields["strength"], answer_ms, stamp]
    one_row = "(" + ", ".join(["%s"] * len(RESPONSE_COLUMNS)) + ")"
    claimed = rawsql.execute(
        f"UPDATE {T.Trial} SET answered_at = %s, submission_id = %s WHERE id = %s AND answered_at IS NULL",
        [stamp, rawsql.uuid_param(trial.submission_id), trial.id],
    )
    if not claimed:
        raise IntegrityError("answered meanwhile")
    rawsql.execute(f"INSERT INTO {T.Response} ({', '.join(RESPONSE_COLUMNS)}) VALUES "
                   + ", ".join([one_row] * len(answers)), values)
    if other_open:
        rawsql.execute(f"UPDATE {T.Participant} SET last_seen_at = %s WHERE id = %s", [stamp, participant.pk])
    else:  # the page's last trial: on to the next page (rare: the whole participant is loaded for it)
        full = Participant.objects.select_related("study", "version").get(pk=participant.pk)
        full.last_seen_at = now
        _advance(full)
        if full.status == Participant.Status.ACTIVE:
            Participant.objects.filter(pk=full.pk).update(page_index=full.page_index, last_seen_at=now)
    return AnsweredTrial(trial.id, trial.public_id, trial.position, trial.page_index, now, trial.submission_id)


def _answered_again(trial: AnsweredTrial, submission_uuid: uuid.UUID) -> tuple[AnsweredTrial, bool]:
    if trial.submission_id == submission_uuid:
        return trial, False
    raise Conflict("This trial is already answered.", code="answered")


# -------------------------------------------------------------------------------- completion and QC
def _finish(participant: Participant) -> None:
    participant.status = Participant.Status.COMPLETED
    participant.completed_at = timezone.now()
    if participant.source == Participant.Source.PROLIFIC:
        participant.completion_code = participant.study.completion_code
    else:
        participant.completion_code = new_completion_code()
    participant.save()
    quality_evaluate(participant=participant)


def quality_evaluate(*, participant: Participant) -> list[Exclusion]:
    """Apply the spec's quality rules to a finished session; store an Exclusion per broken rule.

    Rules (all configured under `quality:`): attention checks answered wrong more than allowed;
    a rated video watched less than `min_watch_fraction`; a median answer time under
    `min_median_answer_ms` (speeding); one likert value used for more than `max_identical_fraction`
    of the ratings (straight-lining, at least 5 ratings). Data are never deleted.
    """
    spec = participant.version.spec
    rules = spec["quality"]
    found: list[tuple[str, str, dict]] = []
    trials = list(
        participant.trials.prefetch_related("responses", "slots__watch", "slots__stimulus").order_by("position")
    )
    failures = []
    for t in trials:
        if t.kind != Trial.Kind.ATTENTION:
            continue
        expected = t.slots.all()[0].stimulus.expected_answer or {}
        want = expected.get("value", 1)
        values = [r.value for r in t.responses.all()]
        if not values or any(v != want for v in values):
            failures.append(t.position)
    if len(failures) > rules["max_attention_failures"]:
        found.append(("attention_check", f"failed {len(failures)} attention check(s); {rules['max_attention_failures']} allowed",
                      {"trials": failures}))
    rated = [t for t in trials if t.kind == Trial.Kind.RATED]
    short = []
    for t in rated:
        for s in t.slots.all():
            if s.role == TrialStimulus.Role.REFERENCE:
                continue  # not rated, and watching it is optional
            w = getattr(s, "watch", None)
            if w is None or w.watched_fraction < rules["min_watch_fraction"]:
                short.append({"trial": t.position, "watched": w.watched_fraction if w else 0.0})
    if short:
        found.append(("min_watch", f"{len(short)} video(s) watched less than {rules['min_watch_fraction']:.0%}",
                      {"videos": short}))
    times = [r.answer_ms for t in rated for r in t.responses.all()]
    if times:
        median = statistics.median(times)
        if median < rules["min_median_answer_ms"]:
            found.append(("speed", f"median answer time {median:.0f} ms is below {rules['min_median_answer_ms']} ms",
                          {"median_answer_ms": median}))
    likert_values = [
        r.value for t in rated if spec["questions"][t.question]["type"] == "likert" for r in t.responses.all()
    ]
    if len(likert_values) >= 5:
        value, count = Counter(likert_values).most_common(1)[0]
        share = count / len(likert_values)
        if share > rules["max_identical_fraction"]:
            found.append(("straight_lining", f"{share:.0%} of likert ratings were the same value ({value:g})",
                          {"value": value, "share": share}))
    created = []
    for rule, reason, details in found:
        exclusion, made = Exclusion.objects.get_or_create(
            participant=participant, rule=rule, defaults={"reason": reason, "details": details}
        )
        if made:
            created.append(exclusion)
    return created


def exclusion_add(*, participant: Participant, rule: str, reason: str) -> Exclusion:
    """A researcher's manual exclusion (kept with its reason; the data stay)."""
    if not rule or not reason:
        raise ServiceError("An exclusion needs a rule name and a reason.")
    exclusion, _ = Exclusion.objects.get_or_create(participant=participant, rule=rule, defaults={"reason": reason})
    return exclusion


# --- recruiting
@transaction.atomic
def study_recruiting_set(*, study: Study, keys: tuple[str, ...], value) -> dict:
    """Set `study.recruiting[k1][k2]...[kn] = value`, creating the mappings on the way.

    The row is locked so that two commands (say a publish and a bonus) cannot lose each other's writes.
    Returns the stored mapping and refreshes `study.recruiting`.
    """
    locked = Study.objects.select_for_update().get(pk=study.pk)
    node = locked.recruiting
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    locked.save(update_fields=["recruiting"])
    study.recruiting = locked.recruiting
    return locked.recruiting


@transaction.atomic
def study_recruiting_append(*, study: Study, keys: tuple[str, ...], items: list) -> dict:
    """Append `items` to the list at `study.recruiting[k1]...[kn]` (created empty when missing)."""
    locked = Study.objects.select_for_update().get(pk=study.pk)
    node = locked.recruiting
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node.setdefault(keys[-1], []).extend(items)
    locked.save(update_fields=["recruiting"])
    study.recruiting = locked.recruiting
    return locked.recruiting
