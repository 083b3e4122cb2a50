"""Stimulus production on the Django side: which stimuli a study needs, the render jobs that make them, and
the body of the render task — the motion of one condition for one utterance, moved onto the embodiment's rig,
rendered, encoded, checked and registered under an opaque token.

The motion recipes, rigs, renderer and encoder live in render/ (no Django); trained models in inference/.
A stimulus is made once per variant of render settings (studies/variants.py): a cell (utterance × condition ×
embodiment) that has one in the study's variant is never rendered again, a study with other settings gets its
own, and rendered files are cached by the hash of everything that decides their bytes.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import random
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from django.conf import settings
from django.db import DatabaseError, connection, transaction

from .models import Condition, Corpus, Embodiment, RenderJob, Stimulus, TrainedModel, Utterance
from .selectors import speech_utterances, study_corpus_stimuli
from .spec import BUILT_IN_CONDITIONS, RENDER_KEYS
from .variants import FROZEN_KEY, attention_scale, cell_variant, frozen_variants, study_variants

if TYPE_CHECKING:
    from render.checks import StimulusFacts

RENDER_MAKER_VERSION = 2  # 2: lights per vertex on the GPU side, 2:1 supersampling halved by the GL; x264 veryfast
ATTENTION_CONDITION = "attention-check"
AV_CHECK_CONDITION = "av-check"


class RenderRequestError(ValueError):
    """A stimulus that cannot be made as asked; the message says why and what to do."""


def _media(rel: str) -> Path:
    return Path(settings.MEDIA_ROOT) / rel


# --- what a study needs ---------------------------------------------------------------------------------


@transaction.atomic
def conditions_ensure(spec: dict) -> dict[str, Condition]:
    """The study's conditions as rows: built-in recipes and definitions in the spec are created when absent;
    an existing condition is never changed."""
    stim = spec["stimuli"]
    definitions = stim.get("condition_definitions", {})
    out = {}
    for name in stim["conditions"]:
        condition = Condition.objects.filter(name=name).first()
        if condition is None:
            if name in definitions:
                d = definitions[name]
                condition = Condition.objects.create(name=name, kind=d["kind"], params=d["params"],
                                                     description=d.get("description", ""))
            elif name in BUILT_IN_CONDITIONS:
                condition = Condition.objects.create(name=name, kind=name)
            else:
                raise RenderRequestError(f"condition {name!r} does not exist; define it in the study file, e.g. "
                                         f"`{{name: {name}, kind: model, model: NAME}}`")
        elif name in definitions and (condition.kind, condition.params) != (definitions[name]["kind"],
                                                                            definitions[name]["params"]):
            raise RenderRequestError(f"condition {name!r} exists as {condition.kind} {condition.params}; the study "
                                     "defines it differently — give the new definition another name")
        out[name] = condition
    return out


def needs_attention_checks(spec: dict) -> bool:
    return any(p["type"] == "trials" and p.get("attention_checks") for p in spec["pages"])


def render_settings(spec: dict) -> dict:
    """The study's render settings, defaults filled in (its stimuli's variant is a key of these)."""
    return {**RENDER_KEYS, **(spec["stimuli"].get("render") or {})}


def study_cells(spec: dict) -> list[tuple[Utterance, Condition, str]]:
    """Every (utterance, condition, embodiment) the study shows, attention checks included."""
    stim = spec["stimuli"]
    corpus = Corpus.objects.filter(name=stim["corpus"]).first()
    if corpus is None:
        raise RenderRequestError(f"corpus {stim['corpus']!r} does not exist; import it with `manage.py import_corpus`")
    conditions = conditions_ensure(spec)
    utterances = _rated_utterances(spec, corpus)
    cells = [(u, conditions[c], e) for u in utterances for e in stim["embodiments"] for c in stim["conditions"]]
    if needs_attention_checks(spec):
        attention, _ = Condition.objects.get_or_create(
            name=ATTENTION_CONDITION,
            defaults={"kind": Condition.Kind.ATTENTION_CHECK, "description": "A clip that asks for a known answer."})
        # Two attention-check clips per embodiment, on the longest utterances the trials also use (the
        # instruction must show for 5 s from 2 s in; shorter speech is extended, see _render_cell).
        longest = sorted(utterances, key=lambda u: (-(u.duration_s or 0), u.name))[:2]
        for u in longest:
            for e in stim["embodiments"]:
                cells.append((u, attention, e))
    av_check = av_check_utterance(spec, corpus)
    if av_check is not None:  # spoken digits on the study's first embodiment, its face at rest
        cells.append((av_check, av_check_condition(), stim["embodiments"][0]))
    return cells


def av_check_condition() -> Condition:
    """The one audio/video-check condition (made once)."""
    condition, _ = Condition.objects.get_or_create(
        name=AV_CHECK_CONDITION,
        defaults={"kind": Condition.Kind.AV_CHECK, "description": "Spoken digits the participant types in."})
    return condition


def av_check_utterance(spec: dict, corpus: Corpus) -> Utterance | None:
    """The corpus's audio/video-check utterance (spoken digits, metadata role `av_check` with the expected
    answer) when the study has an av_check page, else None."""
    if not any(p["type"] == "av_check" for p in spec["pages"]):
        return None
    return corpus.utterances.filter(metadata__role="av_check").order_by("name").first()


def _rated_utterances(spec: dict, corpus: Corpus) -> list[Utterance]:
    stim = spec["stimuli"]
    qs = speech_utterances(corpus.utterances.all()).order_by("name")
    if stim["utterances"] != "all":
        qs = qs.filter(name__in=stim["utterances"])
        missing = sorted(set(stim["utterances"]) - set(qs.values_list("name", flat=True)))
        if missing:
            raise RenderRequestError(f"utterances not in corpus {corpus.name}: {', '.join(missing)}")
    utterances = list(qs)
    if not utterances:
        raise RenderRequestError(f"corpus {corpus.name} has no utterances to render")
    return utterances


# --- jobs ----------------------------------------------------------------------------------------------


def render_jobs_plan(spec: dict, *, retry_failed: bool = False, uploads: str | None = None,
                     reencode: bool = False) -> list[RenderJob]:
    """One job per rendered cell that has no stimulus yet in the study's variant (existing queued jobs are
    reused; failed ones only when `retry_failed`); cells filmed on the physical robot are left to
    `capturing.capture_jobs_plan`. Cells that have a stimulus get a done job pointing at it, so progress counts
    them.
    `uploads` is the folder of an uploaded condition's videos; `reencode` lets failing uploads be re-encoded."""
    settings_ = job_settings(spec)
    if uploads:
        settings_.update(uploads=str(Path(uploads).resolve()), reencode=reencode)
    return [job_for_cell(utterance, condition, embodiment, settings_, retry_failed=retry_failed)
            for utterance, condition, embodiment in study_cells(spec)
            if not is_captured(condition, embodiment)]   # robot cells: `manage.py capture` (studies/capturing.py)


def job_settings(spec: dict) -> dict:
    """What a study's render or capture jobs need of it: its render settings and the scale attention checks
    ask about (together they decide a cell's variant: `cell_variant(job_settings(spec), kind)`)."""
    frozen = frozen_variants(spec)  # a loaded study's, kept with its jobs so they make the videos it shows
    avatar_sha256 = spec["stimuli"].get(AVATAR_SHA256_KEY)  # frozen with them: the custom avatar's files
    return {**render_settings(spec), "attention_scale": attention_scale(spec),
            **({FROZEN_KEY: list(frozen)} if frozen else {}),
            **({AVATAR_SHA256_KEY: avatar_sha256} if avatar_sha256 else {})}


def job_for_cell(utterance: Utterance, condition: Condition, embodiment: str, settings_: dict, *,
                 retry_failed: bool = False) -> RenderJob:
    """The cell's job in the variant of `settings_` (made once): done and pointing at the cell's stimulus of
    that variant when it has one, queued again when it failed and `retry_failed` or when its stimulus was
    deleted, and, while queued, carrying the settings this run asks for (e.g. a folder of uploads given now)."""
    variant = cell_variant(settings_, condition.kind)
    stimulus = Stimulus.objects.filter(utterance=utterance, condition=condition, embodiment=embodiment,
                                       variant=variant).first()
    job, created = RenderJob.objects.get_or_create(
        utterance=utterance, condition=condition, embodiment=embodiment, variant=variant,
        defaults={"settings": settings_,
                  "status": RenderJob.Status.DONE if stimulus else RenderJob.Status.QUEUED, "stimulus": stimulus})
    if not created and stimulus is not None and job.status != RenderJob.Status.DONE:
        job.status, job.stimulus, job.error = RenderJob.Status.DONE, stimulus, ""
        job.save(update_fields=["status", "stimulus", "error", "updated_at"])
    elif not created and stimulus is None and job.status == RenderJob.Status.DONE:
        # Its stimulus was deleted since (e.g. in the admin, to have it made again): to do once more.
        job.status, job.stimulus = RenderJob.Status.QUEUED, None
        job.save(update_fields=["status", "stimulus", "updated_at"])
    if retry_failed and job.status == RenderJob.Status.FAILED:
        job.status, job.error = RenderJob.Status.QUEUED, ""
        job.save(update_fields=["status", "error", "updated_at"])
    if job.status == RenderJob.Status.QUEUED and job.settings != settings_:
        job.settings = settings_
        job.save(update_fields=["settings", "updated_at"])
    return job


def render_progress(jobs: list[RenderJob]) -> dict:
    counts = {s: 0 for s in RenderJob.Status.values}
    for job in jobs:
        counts[job.status] += 1
    failures = [{"cell": f"{j.utterance.name}/{j.condition.name}/{j.embodiment}", "error": j.error}
                for j in jobs if j.status == RenderJob.Status.FAILED]
    return {"total": len(jobs), "counts": counts, "failures": failures}


def study_render_jobs(spec: dict) -> list[RenderJob]:
    """The render jobs of a loaded study's cells in its variant (for its dashboard)."""
    stim = spec["stimuli"]
    names = stim.get("resolved_utterances") or []
    variant, attention_variant = study_variants(spec)
    qs = RenderJob.objects.filter(utterance__corpus__name=stim["corpus"], embodiment__in=stim["embodiments"])
    cells = (qs.filter(condition__name__in=list(stim["conditions"]), variant=variant)
             | qs.filter(condition__name=ATTENTION_CONDITION, variant=attention_variant))
    if names:
        cells = cells.filter(utterance__name__in=names)
    if any(p["type"] == "av_check" for p in spec["pages"]):
        cells = cells | qs.filter(condition__name=AV_CHECK_CONDITION, variant=variant)
    return list(cells.select_related("utterance", "condition"))


def job_claim(job_id: int) -> tuple[RenderJob, bool]:
    """Take a render or capture job to work on: (job, True) when its cell already has a stimulus in the job's
    variant (the job is then marked done with it), else (job, False) with the job marked in progress and its
    attempts counted."""
    with transaction.atomic():
        job = RenderJob.objects.select_for_update().select_related("utterance", "condition").get(pk=job_id)
        existing = Stimulus.objects.filter(utterance=job.utterance, condition=job.condition,
                                           embodiment=job.embodiment, variant=job.variant).first()
        if existing is not None:
            job.status, job.stimulus, job.error = RenderJob.Status.DONE, existing, ""
            job.save(update_fields=["status", "stimulus", "error", "updated_at"])
            return job, True
        job.status, job.attempts = RenderJob.Status.RENDERING, job.attempts + 1
        job.save(update_fields=["status", "attempts", "updated_at"])
    return job, False


def render_job_run(*, job_id: int) -> RenderJob:
    """Make the job's stimulus, registered in the job's variant (idempotent: a cell with a stimulus in that
    variant is done; a rendered file that is cached is registered without rendering again). Failures are
    recorded on the job with their reason, then raised."""
    from . import services

    with job_lock(job_id):
        job, done = job_claim(job_id)
        if done:
            return job
        try:
            path, recipe, expected, checked = _render_cell(job)
            stimulus = services.stimulus_register(
                utterance=job.utterance, condition=job.condition, embodiment=job.embodiment, variant=job.variant,
                source_path=path, recipe=recipe, expected_answer=expected, checked=checked)
        except Exception as exc:
            RenderJob.objects.filter(pk=job.pk).update(status=RenderJob.Status.FAILED, error=_reason(exc))
            raise
        RenderJob.objects.filter(pk=job.pk).update(status=RenderJob.Status.DONE, stimulus=stimulus, error="")
    job.refresh_from_db()
    return job


JOB_LOCK_NAMESPACE = 0x52454E44  # "REND": the first key of PostgreSQL's two-key advisory locks on jobs


@contextlib.contextmanager
def job_lock(job_id: int):
    """Work on one job in one process at a time, across machines. A second delivery of the same task (the
    batch queued twice, or redelivered after the visibility timeout while the first worker still renders)
    waits here, then finds the stimulus made and renders nothing.

    On PostgreSQL this is an advisory lock of the worker's database session, so a worker that dies
    (SIGKILL, OOM, a crashed host whose connection PostgreSQL sees close) releases it at once and the
    redelivered task renders. Elsewhere (SQLite: one machine) there is no lock; two processes may then
    render one job twice, and stimulus_register still keeps one stimulus per cell and variant."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s, %s)", [JOB_LOCK_NAMESPACE, job_id])
    try:
        yield
    finally:
        # A connection lost meanwhile (a database restart) took the lock with it.
        with contextlib.suppress(DatabaseError), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [JOB_LOCK_NAMESPACE, job_id])


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 2000 else text[:2000] + " …"


# --- one cell ------------------------------------------------------------------------------------------


def _render_cell(job: RenderJob) -> tuple[Path, dict, dict | None, StimulusFacts | None]:
    """Motion for the cell's condition, moved onto its rig, rendered into the cache; returns the file, the
    recipe that rebuilds it, the expected answer (attention checks), and the file's facts when it was made and
    checked just now (None for a file found in the cache or an upload: those are checked when registered)."""
    from render.stimulus import make_stimulus

    utterance, condition, embodiment = job.utterance, job.condition, job.embodiment
    opts = {**RENDER_KEYS, **job.settings}
    if condition.kind == Condition.Kind.UPLOADED:
        return (*_uploaded_cell(job, opts), None)
    seed = int(condition.params.get("seed", 0)) if condition.params else 0
    clip, recipe = condition_motion(condition, utterance, fps=float(opts["fps"]), seed=seed)
    clip, overlay, expected = cell_extras(condition, utterance, embodiment, clip, recipe, seed=seed, opts=opts)
    rig, clip, rig_recipe = _rig_for(embodiment, clip, opts)
    audio = _media(utterance.audio_path)
    key = _cache_key(audio, clip, embodiment, rig_recipe, opts, overlay)
    cached = Path(settings.VAR_DIR) / "cache" / "stimuli" / f"{key}.mp4"
    checked = None
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        checked = make_stimulus(rig, clip, audio, cached, settings=_offscreen_settings(opts),
                      audio_offset_s=float(utterance.metadata.get("audio_offset_s", 0.0)), overlay_text=overlay)
    recipe = {"maker": "render", "maker_version": RENDER_MAKER_VERSION, "condition": condition.name,
              "condition_kind": condition.kind, "embodiment": embodiment, "seed": seed,
              "render": _offscreen_settings(opts), **rig_recipe, **recipe}
    return cached, recipe, expected, checked


def cell_extras(condition: Condition, utterance: Utterance, embodiment: str, clip, recipe: dict, *, seed: int,
                opts: dict):
    """What a cell adds to its condition's motion, whoever makes its video (renderer or camera): an attention
    check's on-screen instruction, the number it asks for (seeded per cell) and the length it needs; a catch
    trial's expected answer. Returns (clip, overlay text or None, expected answer or None); `recipe` records
    the choices."""
    if condition.kind == Condition.Kind.ATTENTION_CHECK:
        import math

        from inference.motion import fit_length
        from render.overlays import (ATTENTION_MIN_DURATION_S, ATTENTION_MIN_START_S, attention_instruction,
                                     choose_attention_number)

        rng = random.Random(f"{seed}:{utterance.name}:{embodiment}")
        number = choose_attention_number(rng, int(opts.get("attention_scale") or 5))
        # GENEA's rule: the instruction shows for ≥ 5 s from ≥ 2 s in; short speech is followed by silence
        # while the motion carries on (mirrored), so every attention check lasts long enough.
        needed = math.ceil((ATTENTION_MIN_START_S + ATTENTION_MIN_DURATION_S) * clip.fps)
        if clip.n_frames < needed:
            clip = fit_length(clip, needed)
            recipe["extended_to_frames"] = needed
        recipe["attention_number"] = number
        return clip, attention_instruction(number), {"value": number}
    if condition.kind == Condition.Kind.AV_CHECK:
        expected = utterance.metadata.get("expected_answer")
        if not (isinstance(expected, dict) and str(expected.get("digits", "")).isdecimal()):
            raise RenderRequestError(f"the A/V check utterance {utterance.name} has no expected digits in its "
                                     "metadata (expected_answer: {digits: \"123\"})")
        return clip, None, {"digits": str(expected["digits"])}
    if condition.params.get("catch"):
        return clip, None, {"mismatch": True}
    return clip, None, None


UPLOAD_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")


def _uploaded_cell(job: RenderJob, opts: dict) -> tuple[Path, dict, None]:
    """A researcher's own video for the cell: `<uploads>/<condition>/<utterance>.<ext>`, checked like every
    stimulus; one that fails the format rules is re-encoded only when asked (`--reencode`)."""
    from render.checks import StimulusCheckError, check_stimulus, reencode_upload, sha256_of

    folder = opts.get("uploads")
    if not folder:
        raise RenderRequestError(f"condition {job.condition.name} is uploaded: give the folder of videos with "
                                 "`render_study ... --uploads DIR` (files DIR/<condition>/<utterance>.mp4)")
    base = Path(folder) / job.condition.name / job.utterance.name
    found = [base.with_suffix(ext) for ext in UPLOAD_EXTENSIONS if base.with_suffix(ext).is_file()]
    if not found:
        raise RenderRequestError(f"no uploaded video for {job.utterance.name} in condition {job.condition.name}: "
                                 f"expected {base}.mp4 (or {', '.join(UPLOAD_EXTENSIONS[1:])})")
    source = found[0]
    recipe = {"maker": "uploaded", "condition": job.condition.name, "source_file": source.name,
              "source_sha256": sha256_of(source)}
    try:
        check_stimulus(source)
        return source, recipe, None
    except StimulusCheckError as exc:
        if not (opts.get("reencode") and exc.reencode_helps):
            hint = ("; run again with --reencode to have it re-encoded to the rules" if exc.reencode_helps else "")
            raise RenderRequestError(f"{exc}{hint}") from None
    fixed = Path(settings.VAR_DIR) / "cache" / "uploads" / f"{recipe['source_sha256']}.mp4"
    if not fixed.exists():
        fixed.parent.mkdir(parents=True, exist_ok=True)
        reencode_upload(source, fixed)
    return fixed, {**recipe, "reencoded": True}, None


def condition_motion(condition: Condition, utterance: Utterance, *, fps: float, seed: int):
    """The motion clip of `condition` for `utterance` at `fps`, and the recipe that rebuilds it."""
    from inference.motion import MotionClip, frames_for_duration, resample
    from render import conditions as recipes

    kind = condition.kind
    own = _recorded(utterance)
    n_frames = frames_for_duration(utterance.duration_s or (own.duration_s if own else 0), fps)
    if own is not None:
        own = resample(own, fps, n_frames=n_frames)
    if kind in (Condition.Kind.GROUND_TRUTH, Condition.Kind.ATTENTION_CHECK, Condition.Kind.AV_CHECK):
        if own is None:
            if kind == Condition.Kind.GROUND_TRUTH:
                raise RenderRequestError(f"utterance {utterance} has no recorded motion; import its corpus with "
                                         "motion (import_corpus) to render ground truth")
            return _neutral(n_frames, fps), {"motion_from": "neutral"}
        clip, recipe = recipes.ground_truth(own)
        return clip, {**recipe, "motion_from": utterance.name}
    if kind == Condition.Kind.STILL:
        base = own if own is not None else _neutral(n_frames, fps)
        return recipes.still(base)
    if kind == Condition.Kind.TIME_SHIFT:
        if own is None:
            raise RenderRequestError(f"utterance {utterance} has no recorded motion to shift")
        ms = float(condition.params.get("ms", 0))
        return recipes.catch_trial(own, ms=ms) if condition.params.get("catch") else recipes.time_shift(own, ms)
    if kind == Condition.Kind.RANDOM_ALIGNMENT:
        donors = {}
        others = speech_utterances(utterance.corpus.utterances.exclude(pk=utterance.pk).exclude(motion_path=""))
        for other in others:
            donors[other.name] = (other.speaker, resample(MotionClip.load(_media(other.motion_path)), fps))
        if not donors:
            raise RenderRequestError(f"random alignment needs another utterance with motion in corpus "
                                     f"{utterance.corpus.name}")
        return recipes.random_alignment(utterance.name, utterance.speaker, n_frames, donors, seed=seed)
    if kind == Condition.Kind.MODEL:
        return _model_motion(condition, utterance, fps=fps, n_frames=n_frames, seed=seed)
    raise RenderRequestError(f"condition kind {kind!r} has no motion to render")


def _recorded(utterance: Utterance):
    from inference.motion import MotionClip

    if not utterance.motion_path:
        return None
    return MotionClip.load(_media(utterance.motion_path))


def _neutral(n_frames: int, fps: float):
    import numpy as np

    from inference.motion import MotionClip

    return MotionClip(fps=fps, layout="arkit52", values=np.zeros((n_frames, 52), np.float32),
                      head_pose=np.zeros((n_frames, 6), np.float32), metadata={"source": "neutral"})


def _model_motion(condition: Condition, utterance: Utterance, *, fps: float, n_frames: int, seed: int):
    from inference.generate import generate
    from inference.motion import MotionClip, resample

    from .generators import checkpoint_file, feature_cache_dir

    name = condition.params.get("model")
    model = TrainedModel.objects.filter(name=name).first()
    if model is None or model.status != TrainedModel.Status.DONE:
        raise RenderRequestError(f"condition {condition.name} needs the trained model {name!r}, which "
                                 f"{'does not exist' if model is None else 'has not finished training'}; "
                                 "train it with `manage.py train`")
    temperature = condition.params.get("temperature")
    tag = f"seed{seed}" + (f"-t{temperature:g}" if temperature is not None else "")
    rel = f"generated/{model.name}/{tag}/{utterance.name}.npz"
    if _media(rel).exists():
        clip = MotionClip.load(_media(rel))
    else:
        clip = generate(checkpoint_file(model), _media(utterance.audio_path), seed=seed, temperature=temperature,
                        cache_dir=feature_cache_dir())
        clip = clip.with_values(clip.values, utterance=utterance.name)
        clip.save(_media(rel))
    clip = resample(clip, fps, n_frames=n_frames)
    return clip, {"model": model.name, "model_kind": model.kind, "checkpoint": model.checkpoint_path,
                  "checkpoint_sha256": clip.metadata.get("checkpoint_sha256", ""), "temperature": temperature,
                  "motion_from": f"model:{model.name}"}


def _rig_for(embodiment: str, clip, opts: dict):
    """The rig of an embodiment, and the clip in a layout it takes (robots: through the inverse model)."""
    if embodiment == "avatar":
        if opts.get("avatar"):
            rig, recipe = _custom_avatar(opts["avatar"], opts.get(AVATAR_SHA256_KEY))
            return rig, clip, recipe
        from render.avatar import Avatar

        return Avatar(), clip, {"rig": "avatar"}
    if embodiment == "robot_sim":
        from inference.robots import robot_profile
        from render.robot import SimRobot

        clip, model = robot_motion(clip, opts, embodiment=embodiment)
        robot = clip.layout.split(":", 1)[1]
        return SimRobot(robot_profile(robot).to_dict()), clip, {"rig": f"robot_sim:{robot}",
                                                                 "inverse_model": model.name}
    raise RenderRequestError(f"embodiment {embodiment!r} is not rendered here; robot_physical stimuli are "
                             "filmed by the hardware worker (`manage.py capture`)")


_CUSTOM_AVATARS: dict[tuple[str, str], object] = {}  # (path, content hash) -> loaded rig, per worker process
AVATAR_SHA256_KEY = "avatar_sha256"  # in a spec's `stimuli` (frozen with its variants) and its jobs' settings


def _custom_avatar_files(ref: str):
    """(path of the YAML, its parsed spec, SHA-256 of the YAML, mesh and shape files) of a custom avatar
    (`stimuli.render.avatar`: relative to MEDIA_ROOT or absolute); RenderRequestError when it cannot be read."""
    from render.custom_avatar import CustomAvatarSpec
    from render.rig import RigError

    path = Path(ref) if Path(ref).is_absolute() else Path(settings.MEDIA_ROOT) / ref
    if not path.is_file():
        raise RenderRequestError(f"the study's custom avatar {ref} is not a file (looked for {path}); put it under "
                                 "MEDIA_ROOT, where every render worker sees it, or give an absolute path")
    try:
        spec = CustomAvatarSpec.from_dict(yaml.safe_load(path.read_text(encoding="utf-8")), base_dir=path.parent,
                                          source=str(path))
        digest = hashlib.sha256()
        for file in (path, spec.mesh, *spec.shapes.values()):
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    except (RigError, yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        raise RenderRequestError(f"the study's custom avatar {ref}: {exc}") from None
    return path, spec, digest.hexdigest()


def freeze_variants(spec: dict) -> dict:
    """Freeze into a spec read from YAML the variants of its videos (studies/variants.py), unless it has
    them: a custom avatar counts by the contents of its files as well as by its path, so an avatar edited
    in place gets new videos rather than those of its old self; the hash is kept with the variants, and a
    render whose avatar's files no longer match it fails (_rig_for). RenderRequestError when the avatar
    cannot be read."""
    stim = spec["stimuli"]
    if frozen_variants(spec) is None:
        avatar = (stim.get("render") or {}).get("avatar")
        digest = _custom_avatar_files(avatar)[2] if avatar else None
        stim[FROZEN_KEY] = list(study_variants(spec, avatar_sha256=digest))
        if digest:
            stim[AVATAR_SHA256_KEY] = digest
    return spec


def _custom_avatar(ref: str, expected_sha256: str | None = None):
    """A study's custom avatar and the recipe that names it with the hash of its files, so a changed mesh or
    map renders anew; refused when the files' hash is not the one the study was planned with."""
    from render.custom_avatar import CustomAvatar
    from render.rig import RigError

    path, spec, digest = _custom_avatar_files(ref)
    if expected_sha256 and digest != expected_sha256:
        raise RenderRequestError(
            f"the study's custom avatar {ref} changed since the study was read (its files' SHA-256 was "
            f"{expected_sha256[:12]}…, now {digest[:12]}…): put the files back, or run render_study on the study's "
            "YAML (and load it again) to render the new avatar as new videos")
    key = (str(path), digest)
    if key not in _CUSTOM_AVATARS:
        try:
            _CUSTOM_AVATARS[key] = CustomAvatar(spec)
        except RigError as exc:
            raise RenderRequestError(f"the study's custom avatar {ref}: {exc}") from None
    return _CUSTOM_AVATARS[key], {"rig": "custom_avatar", "avatar": ref, "avatar_sha256": digest}


def robot_motion(clip, opts: dict, *, embodiment: str = "robot_sim"):
    """The clip as a robot's motor commands (`motors:<robot>`), through the study's inverse model
    (`stimuli.render.robot_model`, else the newest trained one), and that model; shared by the simulated
    robot's renders and the physical robot's captures, so both play the same commands."""
    from inference.models.inverse import apply_inverse

    from .generators import checkpoint_file

    name = opts.get("robot_model")
    model = (TrainedModel.objects.filter(name=name) if name else
             TrainedModel.objects.filter(kind="inverse", status=TrainedModel.Status.DONE).order_by("-created_at")
             ).first()
    if model is None or model.status != TrainedModel.Status.DONE:
        raise RenderRequestError(f"a {embodiment} stimulus needs a trained robot inverse model; train one with "
                                 "`manage.py train --corpus NAME --model inverse` (or name it in "
                                 "stimuli.render.robot_model)")
    if not clip.layout.startswith("motors:"):
        clip = apply_inverse(checkpoint_file(model), clip)
    return clip, model


def is_captured(condition: Condition, embodiment: str) -> bool:
    """Whether a cell is filmed on the physical robot by the hardware worker (`manage.py capture`) rather than
    rendered here: robot_physical cells, except uploaded videos (filmed elsewhere, checked like any upload)."""
    return embodiment == Embodiment.ROBOT_PHYSICAL and condition.kind != Condition.Kind.UPLOADED


def _offscreen_settings(opts: dict) -> dict:
    return {k: opts[k] for k in ("width", "height", "fps", "background", "framing", "lighting")}


def _cache_key(audio: Path, clip, embodiment: str, rig_recipe: dict, opts: dict, overlay: str | None) -> str:
    h = hashlib.sha256()
    h.update(audio.read_bytes())
    h.update(clip.values.tobytes())
    if clip.head_pose is not None:
        h.update(clip.head_pose.tobytes())
    from render.offscreen import RenderSettings

    # Everything that decides the pixels, the renderer's own defaults (shading, supersampling) included.
    look = RenderSettings.from_dict({k: v for k, v in _offscreen_settings(opts).items() if k != "fps"}).to_dict()
    h.update(json.dumps([clip.layout, clip.fps, embodiment, rig_recipe, look, opts["fps"], overlay,
                         RENDER_MAKER_VERSION], sort_keys=True, default=str).encode())
    return h.hexdigest()


def stimuli_gallery(spec: dict, corpus: Corpus, utterance_name: str | None = None,
                    rated: list[str] | tuple = ()) -> dict:
    """One utterance's stimuli that the study may show (its variant's: selectors.study_corpus_stimuli) grouped
    by condition and embodiment, for the researchers' gallery. Listed: the study's rated utterances first (the first is shown
    unless one is asked for), then the others, the check clips last."""
    made = study_corpus_stimuli(spec, corpus)
    with_stimuli = corpus.utterances.filter(pk__in=made.values("utterance_id"))
    speech = set(speech_utterances(with_stimuli).values_list("pk", flat=True))
    utterances = sorted(with_stimuli, key=lambda u: (u.name not in rated, u.pk not in speech, u.name))
    if not utterances:
        return {"utterances": [], "utterance": None, "rows": [], "embodiments": []}
    chosen = next((u for u in utterances if u.name == utterance_name), utterances[0])
    stimuli = list(made.filter(utterance=chosen).select_related("condition").order_by("condition__name"))
    embodiments = sorted({s.embodiment for s in stimuli})
    rows = {}
    for s in stimuli:
        rows.setdefault(s.condition.name, {})[s.embodiment] = s
    return {"utterances": utterances, "utterance": chosen, "embodiments": embodiments,
            "rows": [(name, [cells.get(e) for e in embodiments]) for name, cells in sorted(rows.items())]}
