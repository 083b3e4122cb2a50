"""Reads: what a participant's page shows, what the researcher's dashboard counts, what exports contain."""
from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from django.db.models import Count, Prefetch, Q

from . import rawsql
from .analysis.columns import PLATFORM_COLUMNS
from .models import (
    Condition, Exclusion, Participant, Response, Stimulus, Study, StudyMember, StudyVersion, Trial, TrialStimulus,
)
from .variants import answer_on_scale, attention_scale, study_variants

NON_DATA_SOURCES = Participant.NON_DATA_SOURCES


def current_page(participant: Participant) -> dict:
    return participant.version.spec["pages"][participant.page_index]


@dataclass(frozen=True)
class SessionParticipant:
    """What the JSON endpoints need to know of the participant a browser's session names (see
    session_participant); `spec` is shared by every request of the version: never change it."""

    id: int
    study_id: int
    version_id: int
    status: str
    page_index: int
    source: str
    spec: dict

    @property
    def pk(self) -> int:
        return self.id


def spec_of(participant) -> dict:
    """The participant's study version spec: a SessionParticipant carries it, a Participant has its version."""
    return participant.spec if isinstance(participant, SessionParticipant) else participant.version.spec


_SPECS: dict[tuple, dict] = {}  # (version id, its creation time) → spec; a version's spec never changes


def session_participant(public_id: str, study_token: str) -> SessionParticipant | None:
    """The participant with this public id in the study with this token, or None: one query, in hand-written
    SQL (rawsql.py), and the version's spec from this process's memory after its first use."""
    try:
        public_uuid = rawsql.uuid_param(public_id)
    except (ValueError, TypeError, AttributeError):
        return None
    T = rawsql.T
    row = rawsql.fetch_one(
        f"SELECT p.id, p.study_id, p.version_id, p.status, p.page_index, p.source, v.created_at "
        f"FROM {T.Participant} p JOIN {T.Study} s ON s.id = p.study_id JOIN {T.StudyVersion} v ON v.id = p.version_id "
        f"WHERE p.public_id = %s AND s.public_token = %s",
        [public_uuid, study_token],
    )
    if row is None:
        return None
    key = (row[2], rawsql.time_value(row[6]))  # the id alone could be reused by a rolled-back test database
    spec = _SPECS.get(key)
    if spec is None:
        spec = StudyVersion.objects.values_list("spec", flat=True).get(pk=row[2])
        if len(_SPECS) >= 512:
            _SPECS.clear()
        _SPECS[key] = spec
    return SessionParticipant(*row[:6], spec=spec)


@dataclass
class Position:
    """Where a participant stands: progress, and the trial to show now (with its videos) if on a trial page:
    the rated videos (`slots`, in screen order), the open reference(s) of a slider trial (`references`), and
    `play_s`, the trial's longest clip, given as every video's duration: the clips of a trial show one
    utterance and differ by a frame at most, but a hidden reference would share its exact length with the open
    reference."""

    done: int
    total: int
    trial: Trial | None
    slots: list
    references: list = field(default_factory=list)
    play_s: float = 0.0


@dataclass
class ShownTrial:
    """The trial a page shows (what the page and trial_mark_shown need of it)."""

    id: int
    public_id: str
    page_index: int
    position: int
    kind: str
    question: str
    first_shown_at: object

    @property
    def pk(self) -> int:
        return self.id


@dataclass(frozen=True)
class ShownVideo:
    """One video of the trial shown: its screen slot, role and the token its URL carries."""

    slot: int
    role: str
    url_token: str
    duration_s: float


def position(participant) -> Position:
    """Two queries (hand-written, rawsql.py): the participant's trials, then the current trial's videos.
    `participant` is a Participant or a SessionParticipant."""
    pages = spec_of(participant)["pages"]
    T = rawsql.T
    trials = rawsql.fetch_all(
        f"SELECT id, public_id, page_index, position, kind, question, first_shown_at, answered_at IS NOT NULL "
        f"FROM {T.Trial} WHERE participant_id = %s ORDER BY position",
        [participant.pk],
    )
    per_page = Counter(t[2] for t in trials)
    total = sum(per_page.get(i, 1) if p["type"] in ("training", "trials") else 1 for i, p in enumerate(pages[:-1]))
    done = sum(1 for t in trials if t[7]) + sum(
        1 for p in pages[: participant.page_index] if p["type"] not in ("training", "trials")
    )
    current = None
    slots = []
    if pages[participant.page_index]["type"] in ("training", "trials"):
        row = next((t for t in trials if t[2] == participant.page_index and not t[7]), None)
        if row is not None:
            current = ShownTrial(*row[:6], first_shown_at=rawsql.time_value(row[6]))
    if current is not None:
        slots = [ShownVideo(*r) for r in rawsql.fetch_all(
            f"SELECT ts.slot, ts.role, COALESCE(NULLIF(ts.token, ''), st.token), st.duration_s FROM {T.TrialStimulus} ts "
            f"JOIN {T.Stimulus} st ON st.id = ts.stimulus_id WHERE ts.trial_id = %s ORDER BY ts.slot",
            [current.id],
        )]
    references = [s for s in slots if s.role == TrialStimulus.Role.REFERENCE]
    rated = [s for s in slots if s.role != TrialStimulus.Role.REFERENCE]
    play_s = max((s.duration_s for s in slots), default=0.0)
    return Position(min(done, total), total, current, rated, references, play_s)


def current_trial(participant: Participant) -> Trial | None:
    """The next unanswered trial on the participant's current page (trials are answered in order), as a model."""
    shown = position(participant).trial
    return None if shown is None else Trial.objects.get(pk=shown.id)


def stimulus_file_for_sessions(participant_ids: list[str], stimulus_token: str) -> str | None:
    """The file (under MEDIA_ROOT) of the video behind a token if one of these participants may see it: one of
    their trials' videos, by its stimulus's token or an open reference's own (one query, hand-written), or
    their study's audio/video check clip."""
    ids = []
    for public_id in participant_ids:
        try:
            ids.append(rawsql.uuid_param(public_id))
        except (ValueError, TypeError, AttributeError):
            continue  # a session holds only ids this site put there; anything else names nobody
    if not ids:
        return None
    T = rawsql.T
    row = rawsql.fetch_one(
        f"SELECT st.file FROM {T.TrialStimulus} ts JOIN {T.Trial} t ON t.id = ts.trial_id "
        f"JOIN {T.Participant} p ON p.id = t.participant_id JOIN {T.Stimulus} st ON st.id = ts.stimulus_id "
        f"WHERE p.public_id IN ({', '.join(['%s'] * len(ids))}) AND (st.token = %s OR ts.token = %s) "
        f"ORDER BY ts.id LIMIT 1",
        [*ids, stimulus_token, stimulus_token],
    )
    if row is not None:
        return row[0]
    for participant in Participant.objects.filter(public_id__in=participant_ids).select_related("version"):
        av = av_check_stimulus(participant.version.spec)
        if av is not None and av.token == stimulus_token:
            return av.file
    return None


def speech_utterances(qs):
    """Leave out the check clips (attention and A/V checks); an utterance without a role is speech. (A plain
    exclude on the JSON key would also drop every row that has no `role`: NULL is not NOT IN.)"""
    return qs.exclude(Q(metadata__has_key="role") & Q(metadata__role__in=["attention_check", "av_check"]))


def in_study_variant(spec: dict) -> Q:
    """The stimuli made for a study's render settings (studies/variants.py): its variant for every cell, and
    for attention checks the variant of its rating scale. (Attention checks a study shows are chosen by
    attention_check_stimuli, which also takes clips made for another scale when their answer is on this one.)"""
    variant, attention_variant = study_variants(spec)
    if variant == attention_variant:
        return Q(variant=variant)
    attention = Q(condition__kind=Condition.Kind.ATTENTION_CHECK)
    return (Q(variant=variant) & ~attention) | (Q(variant=attention_variant) & attention)


def study_corpus_stimuli(spec: dict, corpus):
    """Every video of the corpus the study may show: those of its variant, the attention checks it shows
    (attention_check_stimuli) in place of its attention variant's."""
    attention = Q(condition__kind=Condition.Kind.ATTENTION_CHECK)
    checks = [s.pk for s in attention_check_stimuli(spec, corpus)]
    return Stimulus.objects.filter((in_study_variant(spec) & ~attention) | Q(pk__in=checks), utterance__corpus=corpus)


def av_check_stimulus(spec: dict) -> Stimulus | None:
    """The corpus's audio/video check clip (spoken digits) in the study's variant, if it has one: a rendered
    one before a placeholder."""
    variant, _ = study_variants(spec)
    return (
        Stimulus.objects.filter(utterance__corpus__name=spec["stimuli"]["corpus"], condition__kind=Condition.Kind.AV_CHECK,
                                variant=variant)
        .order_by("is_placeholder", "id")
        .first()
    )


def studies_for_user(user):
    qs = Study.objects.order_by("-created_at")
    if user.is_superuser:
        return qs
    return qs.filter(Q(owner=user) | Q(members__user=user)).distinct()


# What each study action needs: a collaborator's role must be at least this (owners and superusers may all).
ROLE_ORDER = [StudyMember.Role.VIEWER, StudyMember.Role.ANALYST, StudyMember.Role.MANAGER, "owner"]
ACTION_ROLE = {
    "view": StudyMember.Role.VIEWER,        # dashboard, gallery, preview, finished reports
    "analyse": StudyMember.Role.ANALYST,    # participants' data: responses CSV, admin rows, new reports
    "manage": StudyMember.Role.MANAGER,     # open/close, pilot link, renders, new versions
    "share": "owner",                       # choose the collaborators and their roles
}


def study_role(user, study: Study) -> str | None:
    """The user's role on the study: "owner" (also for superusers), a StudyMember role, or None."""
    if not getattr(user, "is_authenticated", False):
        return None
    if user.is_superuser or (study.owner_id is not None and study.owner_id == user.pk):
        return "owner"
    return StudyMember.objects.filter(study=study, user=user).values_list("role", flat=True).first()


def role_allows(role: str | None, action: str) -> bool:
    return role is not None and ROLE_ORDER.index(role) >= ROLE_ORDER.index(ACTION_ROLE[action])


def user_can(user, study: Study, action: str) -> bool:
    return role_allows(study_role(user, study), action)


def studies_where(user, action: str):
    """The studies on which the user may do `action` (for scoping admin lists)."""
    qs = Study.objects.all()
    if user.is_superuser:
        return qs
    roles = ROLE_ORDER[ROLE_ORDER.index(ACTION_ROLE[action]):]
    return qs.filter(Q(owner=user) | Q(members__user=user, members__role__in=roles)).distinct()


def data_participants(study: Study, *, include_pilot: bool = False):
    qs = Participant.objects.filter(study=study)
    if not include_pilot:
        qs = qs.exclude(source__in=NON_DATA_SOURCES)
    return qs


def valid_completions(study: Study):
    """Completed data sessions with no exclusion: what fills a study's quota."""
    return data_participants(study).filter(status=Participant.Status.COMPLETED, exclusions__isnull=True)


def dashboard(study: Study, *, include_pilot: bool = False) -> dict:
    """The researcher's overview: completions per condition and quota, exclusions by reason, times, pay. With
    `include_pilot` the counts take in the preview, pilot and bot sessions too (never the quota's)."""
    version = study.current_version
    spec = version.spec
    parts = data_participants(study, include_pilot=include_pilot)
    status_counts = dict(parts.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    source_counts = dict(parts.values_list("source").annotate(n=Count("id")).values_list("source", "n"))
    completed = parts.filter(status=Participant.Status.COMPLETED)
    excluded_ids = set(Exclusion.objects.filter(participant__in=completed).values_list("participant_id", flat=True))
    minutes = [
        (done - started).total_seconds() / 60
        for started, done in completed.values_list("started_at", "completed_at")
        if done
    ]
    median_minutes = statistics.median(minutes) if minutes else None
    reward = spec["recruitment"]["reward_usd"]
    hourly = (reward / (median_minutes / 60)) if median_minutes else None
    # Rated videos answered, per condition x embodiment: from valid sessions, and from all completed ones.
    per_condition, per_condition_all = Counter(), Counter()
    for cond, emb, pid in TrialStimulus.objects.filter(
        trial__participant__in=completed, trial__kind=Trial.Kind.RATED, trial__answered_at__isnull=False
    ).exclude(role=TrialStimulus.Role.REFERENCE).values_list(  # the open reference is shown, not rated
        "stimulus__condition__name", "stimulus__embodiment", "trial__participant_id"
    ):
        per_condition_all[(cond, emb)] += 1
        if pid not in excluded_ids:
            per_condition[(cond, emb)] += 1
    exclusions = Counter(Exclusion.objects.filter(participant__in=parts).values_list("rule", flat=True))
    return {
        "study": study,
        "version": version,
        "quota": spec["recruitment"]["quota"],
        "valid_completions": valid_completions(study).count(),
        "include_pilot": include_pilot,
        "completed_without_exclusion": completed.exclude(pk__in=excluded_ids).count(),
        "status_counts": status_counts,
        "source_counts": source_counts,
        "started": sum(status_counts.values()),
        "per_condition": [
            {"condition": c, "embodiment": e, "valid": per_condition[(c, e)], "all": n}
            for (c, e), n in sorted(per_condition_all.items())
        ],
        "exclusions": sorted(exclusions.items()),
        "excluded_participants": len(excluded_ids),
        "median_minutes": median_minutes,
        "reward_usd": reward,
        "hourly_usd": hourly,
        "pilot_sessions": Participant.objects.filter(study=study, source__in=NON_DATA_SOURCES).count(),
        "placeholders": study_uses_placeholders(study),
    }


def study_uses_placeholders(study: Study) -> bool:
    spec = study.current_version.spec
    return Stimulus.objects.filter(
        utterance__corpus__name=spec["stimuli"]["corpus"],
        condition__name__in=spec["stimuli"]["conditions"],
        variant=study_variants(spec)[0],
        is_placeholder=True,
    ).exists()


EXPORT_COLUMNS = PLATFORM_COLUMNS


def _answer_scale(question: dict) -> tuple:
    """The rating scale a question's values lie on: likert 1..points, slider min..max (0..100 unless the spec
    says otherwise), pairwise none (its value is the signed strength, not a rating)."""
    qtype = question.get("type")
    if qtype == "likert":
        return 1, question.get("points", 5)
    if qtype == "slider":
        return question.get("min", 0), question.get("max", 100)
    return "", ""


def _check_kind(trial: Trial, slots: list) -> str:
    """"attention" for an attention-check trial; "catch" for a rated trial whose video (either side of a pair)
    is a catch condition (`params: {catch: true}`, a deliberate lip-sync mismatch); "" otherwise."""
    if trial.kind == Trial.Kind.ATTENTION:
        return "attention"
    if trial.kind == Trial.Kind.RATED and any((s.stimulus.condition.params or {}).get("catch") for s in slots):
        return "catch"
    return ""


def export_rows(study: Study, *, include_pilot: bool = False):
    """Tidy long rows, one per rating. Participants appear only as their random public id."""
    parts = data_participants(study, include_pilot=include_pilot)
    excl = defaultdict(list)
    for pid, rule in Exclusion.objects.filter(participant__in=parts).values_list("participant_id", "rule"):
        excl[pid].append(rule)
    responses = (
        Response.objects.filter(participant__in=parts)
        .select_related("participant", "participant__version", "trial", "stimulus")
        .prefetch_related(
            Prefetch(
                "trial__slots",
                queryset=TrialStimulus.objects.select_related(
                    "stimulus", "stimulus__condition", "stimulus__utterance", "watch"
                ),
            )
        )
        .order_by("participant_id", "trial__position", "item", "slot")
    )
    for r in responses.iterator(chunk_size=2000):
        p = r.participant
        spec = p.version.spec
        question = spec["questions"].get(r.trial.question, {})
        slots = {s.slot: s for s in r.trial.slots.all()}
        rated = slots.get(r.slot)
        is_pair = question.get("type") == "pairwise"
        # For a pair, the row describes the pair; condition columns give the chosen side (empty on a tie).
        described = None
        if is_pair:
            described = next((s for s in slots.values() if r.stimulus_id and s.stimulus_id == r.stimulus_id), None)
        else:
            described = rated
        watch = [getattr(s, "watch", None) for s in (slots.values() if is_pair else [rated] if rated else [])]
        watch = [w for w in watch if w is not None]
        stim = described.stimulus if described else None
        # A tie chooses no side: it keeps the pair's own embodiment and speaker (both sides share them in a
        # within-embodiment pair), so the analysis counts it with the pair's other answers.
        shared = {(s.stimulus.embodiment, s.stimulus.utterance.speaker) for s in slots.values()} if is_pair else set()
        pair_embodiment, pair_speaker = next(iter(shared)) if len(shared) == 1 else ("", "")
        # Pairwise: the trial is a catch when either side is; otherwise only the rated video counts.
        check = _check_kind(r.trial, list(slots.values()) if is_pair else [rated] if rated else [])
        expected = (rated.stimulus.expected_answer or {}).get("value", "") if check == "attention" and rated else ""
        scale_min, scale_max = _answer_scale(question)
        yield {
            "participant": str(p.public_id),
            "source": p.source,
            "status": p.status,
            "excluded": int(bool(excl.get(p.id))),
            "exclusion_rules": ";".join(sorted(excl.get(p.id, []))),
            "cell": p.cell,
            "trial_position": r.trial.position,
            "trial_kind": r.trial.kind,
            "question": r.trial.question,
            "question_type": question.get("type", ""),
            "item": r.item,
            "slot": r.slot,
            "stimulus": stim.token if stim else "",
            "condition": stim.condition.name if stim else "",
            "embodiment": stim.embodiment if stim else pair_embodiment,
            "utterance": stim.utterance.name if stim else (slots[0].stimulus.utterance.name if slots else ""),
            "speaker": stim.utterance.speaker if stim else pair_speaker,
            "role": described.role if described else "",
            "check": check,
            "expected": expected,
            "pair_a": slots[0].stimulus.condition.name if is_pair and 0 in slots else "",
            "pair_b": slots[1].stimulus.condition.name if is_pair and 1 in slots else "",
            "value": r.value,
            "choice": r.choice,
            "strength": r.strength if r.strength is not None else "",
            "scale_min": scale_min,
            "scale_max": scale_max,
            "answer_ms": r.answer_ms,
            "watched_fraction": min((w.watched_fraction for w in watch), default=""),
            "seeks": sum(w.seeks for w in watch),
            "pauses": sum(w.pauses for w in watch),
            "replays": sum(w.replays for w in watch),
            "hidden_ms": sum(w.hidden_ms for w in watch),
            "playback_errors": sum(w.playback_errors for w in watch),
            "trial_shown_at": r.trial.first_shown_at.isoformat() if r.trial.first_shown_at else "",
            "answered_at": r.trial.answered_at.isoformat() if r.trial.answered_at else "",
        }


def attention_stimuli(spec: dict, corpus) -> list[tuple[str, str, str]]:
    """The study's attention-check clips (attention_check_stimuli) as (utterance, condition, embodiment)."""
    return sorted(_cell(s) for s in attention_check_stimuli(spec, corpus))


def attention_check_stimuli(spec: dict, corpus) -> list[Stimulus]:
    """The corpus's attention-check clips a study shows, for each of its embodiments: those made for its
    render settings and rating scale (its attention variant) when there are any; else those made for its
    render settings on another scale whose asked-for rating is on this one (placeholder clips ask for the
    lowest rating, 1, whatever the scale). One query; utterance and condition come with each."""
    variant, attention_variant = study_variants(spec)
    found = list(
        Stimulus.objects.filter(
            utterance__corpus=corpus,
            condition__kind=Condition.Kind.ATTENTION_CHECK,
            embodiment__in=spec["stimuli"]["embodiments"],
            variant__in={variant, attention_variant},
        ).select_related("utterance__corpus", "condition").order_by("id")
    )
    made_for_scale = {s.embodiment for s in found if s.variant == attention_variant}
    points = attention_scale(spec)
    return [s for s in found
            if s.variant == attention_variant
            or (s.embodiment not in made_for_scale and answer_on_scale(s.expected_answer, points))]


def _cell(stimulus: Stimulus) -> tuple[str, str, str]:
    return stimulus.utterance.name, stimulus.condition.name, stimulus.embodiment
