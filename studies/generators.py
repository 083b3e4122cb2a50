"""Trained generator models on the Django side: create a training run, run it (the body of the Celery task
and of `manage.py train`), record its progress for the researcher's pages, generate a split's clips, and
evaluate models against recorded motion. The numbers and networks live in inference/; this file only
moves ids, paths and rows.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from django.conf import settings
from django.db import transaction

from .models import Corpus, TrainedModel

MODELS_DIR = "models"          # checkpoints, under MEDIA_ROOT
GENERATED_DIR = "generated"    # generated clips, under MEDIA_ROOT
PROGRESS_EVERY_S = 1.0


class GeneratorError(ValueError):
    """A training or generation request that cannot be carried out; the message says why and what to do."""


def _media(rel: str) -> Path:
    return Path(settings.MEDIA_ROOT) / rel


def feature_cache_dir() -> Path:
    return Path(settings.VAR_DIR) / "cache" / "features"


# --- reads ---------------------------------------------------------------------------------------------


def corpus_items(corpus: Corpus, *, splits: tuple[str, ...] | None = None):
    """The corpus's utterances with recorded motion, as inference.training.CorpusItem (absolute paths)."""
    from inference.training import CorpusItem

    utterances = corpus.utterances.exclude(motion_path="").order_by("name")
    if splits:
        utterances = utterances.filter(split__in=splits)
    return [CorpusItem(name=u.name, split=u.split or "train", audio_path=str(_media(u.audio_path)),
                       motion_path=str(_media(u.motion_path)), speaker=u.speaker) for u in utterances]


def checkpoint_file(model: TrainedModel) -> Path:
    if not model.checkpoint_path:
        raise GeneratorError(f"model {model.name} has no checkpoint yet (status {model.status})")
    return _media(model.checkpoint_path)


# --- writes --------------------------------------------------------------------------------------------


def trained_model_create(*, name: str, kind: str, corpus: Corpus, config: dict | None = None,
                         init_from: TrainedModel | None = None, pairs_path: str = "") -> TrainedModel:
    """Register a training run after checking everything that can be checked before it starts."""
    from inference.models import KINDS, config_from_dict, recipe

    if kind not in KINDS:
        raise GeneratorError(f"unknown model kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if TrainedModel.objects.filter(name=name).exists():
        raise GeneratorError(f"a model named {name!r} exists already; choose another --name")
    try:
        config_from_dict(recipe(kind).Config, config)
    except (TypeError, ValueError) as exc:
        raise GeneratorError(f"bad configuration for {kind}: {exc}") from None
    if kind == "inverse":
        if pairs_path and not _media(pairs_path).exists() and not Path(pairs_path).exists():
            raise GeneratorError(f"no command/landmark pairs file at {pairs_path}")
    else:
        items = corpus_items(corpus)
        if not items:
            raise GeneratorError(f"corpus {corpus.name} has no utterances with motion; import one with import_corpus")
        if not any(i.split == "train" for i in items):
            raise GeneratorError(f"corpus {corpus.name} has no train split; re-import it with --split")
    if init_from is not None and init_from.status != TrainedModel.Status.DONE:
        raise GeneratorError(f"--init-from {init_from.name} has not finished training (status {init_from.status})")
    return TrainedModel.objects.create(name=name, kind=kind, corpus=corpus, config=config or {},
                                       init_from=init_from, pairs_path=pairs_path)


def _save_progress(model_id: int, **fields) -> None:
    TrainedModel.objects.filter(pk=model_id).update(**fields)


class _ProgressRecorder:
    """Writes the training loop's progress to the row at most once a second (and always at stage ends)."""

    def __init__(self, model_id: int, echo=None):
        self.model_id = model_id
        self.echo = echo
        self.last = 0.0

    def __call__(self, event: dict) -> None:
        if self.echo:
            self.echo(event)
        now = time.monotonic()
        features_done = event.get("stage") == "features" and event["done"] == event["total"]
        if now - self.last >= PROGRESS_EVERY_S or features_done:
            self.last = now
            _save_progress(self.model_id, progress=_fraction(event))


def _fraction(event: dict) -> dict:
    progress = dict(event)
    if event.get("stage") == "features":
        progress["fraction"] = 0.05 * event["done"] / max(event["total"], 1)
    elif "epoch" in event:
        per_stage = 0.95 / max(event.get("stages", 1), 1)
        progress["fraction"] = 0.05 + per_stage * (event["stage_index"] + event["epoch"] / max(event["max_epochs"], 1))
    return progress


def trained_model_run(*, model_id: int, echo=None) -> TrainedModel:
    """Train one registered model to completion (idempotent: a finished model is returned as it is; an
    interrupted one resumes from its last epoch)."""
    from inference import training

    model = TrainedModel.objects.select_related("corpus", "init_from").get(pk=model_id)
    if model.status == TrainedModel.Status.DONE and model.checkpoint_path and checkpoint_file(model).exists():
        return model
    rel = f"{MODELS_DIR}/{model.name}.pt"
    out = _media(rel)
    out.parent.mkdir(parents=True, exist_ok=True)
    _save_progress(model.pk, status=TrainedModel.Status.TRAINING, error="")
    recorder = _ProgressRecorder(model.pk, echo)
    try:
        if model.kind == "inverse":
            loaded = _train_inverse(model, out, recorder)
        else:
            loaded = training.train(
                model.kind, corpus_items(model.corpus), out, config=model.config, cache_dir=feature_cache_dir(),
                progress=recorder, init_from=checkpoint_file(model.init_from) if model.init_from else None,
            )
    except Exception as exc:
        _save_progress(model.pk, status=TrainedModel.Status.FAILED, error=f"{type(exc).__name__}: {exc}")
        raise
    last = loaded.history[-1] if loaded.history else {}
    _save_progress(model.pk, status=TrainedModel.Status.DONE, checkpoint_path=rel,
                   progress={**last, "fraction": 1.0, "epochs": len(loaded.history)})
    model.refresh_from_db()
    return model


def _train_inverse(model: TrainedModel, out: Path, recorder):
    import numpy as np

    from inference.models.inverse import fit_inverse

    if model.pairs_path:
        path = _media(model.pairs_path) if _media(model.pairs_path).exists() else Path(model.pairs_path)
        with np.load(path, allow_pickle=False) as data:
            commands, landmarks = data["commands"], data["landmarks"]
            channels = [str(c) for c in data["channels"]]
            robot = str(data["robot"]) if "robot" in data else "robot"
    else:
        # No recorded pairs: the synthetic servo face stands in for a real robot's calibration recordings.
        from inference.synthetic import robot_pairs

        commands, landmarks, channels = robot_pairs(4000, robot="sim-face", seed=0)
        robot = "sim-face"
    return fit_inverse(commands, landmarks, channels, out, robot=robot, config=model.config, progress=recorder)


@transaction.atomic
def trained_model_retry(*, model: TrainedModel) -> TrainedModel:
    """A failed run goes back to the queue (its resume file, if any, lets it continue)."""
    if model.status != TrainedModel.Status.FAILED:
        raise GeneratorError(f"only a failed model can be retried; {model.name} is {model.status}")
    model.status = TrainedModel.Status.QUEUED
    model.error = ""
    model.save(update_fields=["status", "error", "updated_at"])
    return model


def generate_split(*, model: TrainedModel, split: str = "test", seed: int = 0,
                   temperature: float | None = None) -> list[str]:
    """Generate the model's clips for every utterance of one corpus split; returns the clip paths
    (relative to MEDIA_ROOT). A clip that exists is not generated again."""
    from inference.generate import generate_many
    from inference.training import load_checkpoint

    if model.status != TrainedModel.Status.DONE:
        raise GeneratorError(f"model {model.name} has not finished training (status {model.status})")
    items = corpus_items(model.corpus, splits=(split,))
    if not items:
        raise GeneratorError(f"corpus {model.corpus.name} has no utterances in split {split!r}")
    loaded = load_checkpoint(checkpoint_file(model))
    tag = f"seed{seed}" + (f"-t{temperature:g}" if temperature is not None else "")
    rels = [f"{GENERATED_DIR}/{model.name}/{tag}/{item.name}.npz" for item in items]
    todo = [(item, rel) for item, rel in zip(items, rels) if not _media(rel).exists()]
    if todo:
        clips = generate_many(loaded, [item.audio_path for item, _ in todo], seed=seed, temperature=temperature,
                              cache_dir=feature_cache_dir())
        for (item, rel), clip in zip(todo, clips):
            clip.with_values(clip.values, utterance=item.name).save(_media(rel))
    return rels


def evaluation_write(table, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "objective_metrics.csv"
    md_path = out_dir / "objective_metrics.md"
    table.to_csv(csv_path)
    tmp = md_path.with_name(f".{md_path.name}.{os.getpid()}.part")
    tmp.write_text(table.to_markdown(), encoding="utf-8")
    os.replace(tmp, md_path)
    return csv_path, md_path

