"""Celery tasks: the one place where the ORM meets the libraries (render/, inference/).

Tasks take ids, are idempotent (a stimulus that exists is not made again), write files under a temporary
name and register them only when complete, and are retried when the worker running them dies
(acks_late + reject_on_worker_lost in evalsite/celery.py).
"""
from __future__ import annotations

import hashlib
import os
import random
import tempfile
from pathlib import Path

from celery import shared_task
from django.conf import settings

from .models import Condition, Stimulus, Utterance


def _jaw_for(condition: Condition, utterance: Utterance, fps: float, seed: int):
    """The placeholder's mouth motion for one condition, and the recipe that rebuilds it."""
    from render import placeholder

    media = Path(settings.MEDIA_ROOT)
    own = placeholder.jaw_envelope(media / utterance.audio_path, fps)
    kind = condition.kind
    if kind == Condition.Kind.GROUND_TRUTH:
        return own, {"motion_from": utterance.name}
    if kind == Condition.Kind.STILL:
        return None, {}
    if kind == Condition.Kind.TIME_SHIFT:
        frames = round(condition.params.get("ms", 0) / 1000 * fps)
        return placeholder.time_shift(own, frames), {"shift_frames": frames}
    if kind == Condition.Kind.RANDOM_ALIGNMENT:
        others = list(
            Utterance.objects.filter(corpus=utterance.corpus, metadata__role="speech").exclude(pk=utterance.pk).order_by("name")
        )
        same_speaker = [u for u in others if u.speaker == utterance.speaker] or others
        if not same_speaker:
            raise ValueError(f"random alignment needs another utterance in corpus {utterance.corpus}")
        rng = random.Random(seed)
        donor = rng.choice(same_speaker)
        donor_jaw = placeholder.jaw_envelope(media / donor.audio_path, fps)
        start = rng.randrange(max(len(donor_jaw), 1))
        return placeholder.fit_to_length(donor_jaw, len(own), start=start), {"motion_from": donor.name, "start_frame": start}
    if kind in (Condition.Kind.ATTENTION_CHECK, Condition.Kind.AV_CHECK):
        return own, {"motion_from": utterance.name}
    raise ValueError(f"condition kind {kind} needs the renderer or a model; placeholders cover recorded motion only")


PLACEHOLDER_MAKER_VERSION = 1


def _placeholder_cache_path(audio: Path, jaw, fps, seed, caption) -> Path:
    """Clips are cached by the hash of everything that decides their bytes, so nothing is made twice."""
    h = hashlib.sha256()
    h.update(audio.read_bytes())
    h.update(b"none" if jaw is None else jaw.astype("float32").tobytes())
    h.update(repr((fps, seed, caption, PLACEHOLDER_MAKER_VERSION)).encode())
    return Path(settings.VAR_DIR) / "cache" / "placeholders" / f"{h.hexdigest()}.mp4"


@shared_task(name="studies.tasks.render_placeholder_stimulus")
def render_placeholder_stimulus(utterance_id: int, condition_id: int, embodiment: str = "avatar",
                                seed: int = 0, caption: str | None = None) -> str:
    """Make (once) the placeholder clip of one utterance x condition; returns the stimulus token. Placeholders
    are not rendered with a study's settings: they are the default variant's (""), found by studies that have
    no `stimuli.render` block."""
    from render import placeholder

    from . import services

    utterance = Utterance.objects.get(pk=utterance_id)
    condition = Condition.objects.get(pk=condition_id)
    existing = Stimulus.objects.filter(utterance=utterance, condition=condition, embodiment=embodiment,
                                       variant="").first()
    if existing:
        return existing.token
    fps = 25
    jaw, recipe = _jaw_for(condition, utterance, fps, seed)
    audio = Path(settings.MEDIA_ROOT) / utterance.audio_path
    cached = _placeholder_cache_path(audio, jaw, fps, seed, caption)
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
            out = Path(tmp) / "clip.mp4"
            placeholder.make_placeholder_stimulus(out, speech_wav=audio, jaw=jaw, fps=fps, seed=seed, caption=caption)
            os.replace(out, cached)
    stimulus = services.stimulus_register(
        utterance=utterance, condition=condition, embodiment=embodiment, source_path=cached,
        recipe={"maker": "placeholder", "condition": condition.name, "seed": seed, "fps": fps,
                "caption": caption, **recipe},
        is_placeholder=True, expected_answer=utterance.metadata.get("expected_answer"),
    )
    return stimulus.token


@shared_task(name="studies.tasks.render_ping")
def render_ping(value: int) -> int:
    """A trivial task: answers only if a worker consumes the render queue (used by health checks)."""
    return value + 1


@shared_task(name="studies.tasks.inference_train_model")
def inference_train_model(model_id: int) -> str:
    """Train one registered model (queue `inference`). Safe to run again after a worker died: a finished
    model is left as it is and an interrupted one resumes from its last completed epoch."""
    from . import generators

    return generators.trained_model_run(model_id=model_id).status


@shared_task(name="studies.tasks.inference_generate_split")
def inference_generate_split(model_id: int, split: str = "test", seed: int = 0,
                             temperature: float | None = None) -> list[str]:
    """Generate a trained model's clips for one corpus split (clips that exist are kept)."""
    from . import generators
    from .models import TrainedModel

    return generators.generate_split(model=TrainedModel.objects.get(pk=model_id), split=split, seed=seed,
                                     temperature=temperature)


@shared_task(name="studies.tasks.render_stimulus")
def render_stimulus(job_id: int) -> str:
    """Make one stimulus (queue `render`): the job's condition on its embodiment. Idempotent: a cell that has
    a stimulus is done, and a rendered file in the cache is registered without rendering again."""
    from . import rendering

    job = rendering.render_job_run(job_id=job_id)
    return job.stimulus.token if job.stimulus else ""


@shared_task(name="studies.tasks.report_study")
def report_study(report_id: int) -> str:
    """Analyse a study's responses and write its significance report (queue `inference`). A report that is
    done stays as it is; one interrupted by a dead worker is made again from the start."""
    from . import reporting

    return reporting.report_run(report_id=report_id).status


@shared_task(name="studies.tasks.hardware_capture", bind=True, max_retries=20)
def hardware_capture(self, job_id: int, robot: str, camera: str, settings: dict | None = None,
                     speaker: str | None = None) -> str:
    """Film one robot_physical stimulus (queue `hardware`, on the machine the robot and camera are plugged
    into). Idempotent: a cell that has a stimulus is done. A robot busy with another capture is tried again
    a minute later; any other failure is recorded on the job with its reason."""
    from . import capturing

    try:
        job = capturing.capture_job_run(job_id=job_id, robot_device=robot, camera_device=camera,
                                        settings=settings, speaker_device=speaker)
    except capturing.RobotBusy as exc:
        raise self.retry(exc=exc, countdown=60)
    return job.stimulus.token if job.stimulus else ""


@shared_task(name="studies.tasks.hardware_health")
def hardware_health(robot: str, camera: str) -> dict:
    """Whether the robot and camera on the hardware worker answer: {"ok", "robot", "camera", "name"}."""
    from . import capturing

    return capturing.hardware_check(robot_device=robot, camera_device=camera)
