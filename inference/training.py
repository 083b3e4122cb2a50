"""Training: from a corpus split to a checkpoint that carries everything needed to generate.

`train(kind, items, out_path)` loads the utterances' motion clips and speech, extracts the model's features
(cached by content hash), fits the model's target space and the normalisation statistics on the training
split, then runs the model's stages in an explicit loop: random windows, Adam, gradient clipping, early
stopping on the validation loss with patience, the best weights kept. After every epoch the loop's whole
state (weights, optimiser, random generators, history) is written next to the checkpoint, so an
interrupted run resumes where it stopped and ends with the same weights as an uninterrupted one.

The checkpoint (`torch.save`, read back with `weights_only=True`) holds the kind, the config, the feature
spec, both normalisers, the target space and the training history: `load_checkpoint` needs nothing else.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import features as feats
from .models import Recipe, TrainSettings, config_from_dict, config_to_dict, recipe
from .motion import MotionClip, resample

CHECKPOINT_FORMAT = "evalsite-model"
CHECKPOINT_VERSION = 1


class TrainingError(RuntimeError):
    """Training cannot start or go on; the message says why and what to change."""


@dataclass(frozen=True)
class CorpusItem:
    """One utterance as training sees it (paths absolute; split is train / val / test)."""

    name: str
    split: str
    audio_path: str
    motion_path: str
    speaker: str = ""


@dataclass
class Sequence:
    name: str
    x: np.ndarray   # [T, F] or [T, W, F]
    y: np.ndarray   # [T, D]


@dataclass
class LoadedModel:
    kind: str
    recipe: Recipe
    config: object
    model: torch.nn.Module
    feature_spec: feats.FeatureSpec | None
    feature_norm: feats.Normalizer
    target_norm: feats.Normalizer
    space: dict
    history: list = field(default_factory=list)
    path: str = ""
    sha256: str = ""

    @property
    def fps(self) -> float:
        return float(self.config.fps)


# --- seeding -------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- data ----------------------------------------------------------------------------------------------


def load_sequences(rec: Recipe, cfg, items: list[CorpusItem], *, cache_dir: str | os.PathLike,
                   space: dict | None = None, progress: Callable | None = None) -> tuple[dict, dict[str, list[Sequence]]]:
    """Features and targets of every item, grouped by split; fits the target space on `train` if not given."""
    spec = rec.feature_spec(cfg)
    clips: dict[str, MotionClip] = {}
    for item in items:
        clip = MotionClip.load(item.motion_path)
        if abs(clip.fps - cfg.fps) > 1e-6:
            clip = resample(clip, cfg.fps)
        clips[item.name] = clip
    train_clips = [clips[i.name] for i in items if i.split == "train"]
    if not train_clips:
        raise TrainingError("the corpus has no utterances in the train split; re-import it with a split")
    if space is None:
        space = rec.fit_space(cfg, train_clips)
    by_split: dict[str, list[Sequence]] = {}

    def features_of(item: CorpusItem) -> np.ndarray:
        return feats.extract_cached(item.audio_path, spec, cache_dir=cache_dir, n_frames=clips[item.name].n_frames)

    # Features are extracted by a few threads at once (librosa's FFTs and openSMILE's extractor release the
    # GIL); results come back in corpus order, so the sequences are the same as a serial extraction's.
    with ThreadPoolExecutor(max_workers=feature_workers()) as pool:
        for n, (item, x) in enumerate(zip(items, pool.map(features_of, items)), start=1):
            clip = clips[item.name]
            y = rec.targets(cfg, space, clip)
            # Self-supervised models (APC) return no targets: they learn to predict their own input.
            y = x.reshape(len(x), -1).copy() if y is None else np.asarray(y, np.float32)
            by_split.setdefault(item.split, []).append(Sequence(item.name, x, y))
            if progress:
                progress({"stage": "features", "done": n, "total": len(items)})
    return space, by_split


def feature_workers() -> int:
    """Threads for corpus feature extraction: EVALSITE_FEATURE_WORKERS, else the cores, at most 8."""
    configured = os.environ.get("EVALSITE_FEATURE_WORKERS")
    if configured:
        return max(1, int(configured))
    return max(1, min(8, os.cpu_count() or 1))


def _normalise(sequences: dict[str, list[Sequence]], fnorm: feats.Normalizer, tnorm: feats.Normalizer):
    return {split: [Sequence(s.name, fnorm.apply(s.x).astype(np.float32), tnorm.apply(s.y).astype(np.float32))
                    for s in seqs] for split, seqs in sequences.items()}


def make_batches(seqs: list[Sequence], settings: TrainSettings, rng: np.random.Generator | None):
    """Training batches (rng given): shuffled random windows of `crop_frames`; evaluation batches (rng None):
    whole sequences, padded, with their lengths."""
    order = rng.permutation(len(seqs)) if rng is not None else np.arange(len(seqs))
    for start in range(0, len(order), settings.batch_size):
        chosen = [seqs[i] for i in order[start:start + settings.batch_size]]
        if rng is not None and settings.crop_frames:
            crop = settings.crop_frames
            xs, ys = [], []
            for s in chosen:
                T = len(s.y)
                if T >= crop:
                    a = int(rng.integers(0, T - crop + 1))
                    xs.append(s.x[a:a + crop]); ys.append(s.y[a:a + crop])
                else:  # short utterance: pad by repeating its edge, masked out below
                    xs.append(_pad_edge(s.x, crop)); ys.append(_pad_edge(s.y, crop))
            lengths = [min(len(s.y), crop) for s in chosen]
        else:
            T = max(len(s.y) for s in chosen)
            xs = [_pad_edge(s.x, T) for s in chosen]
            ys = [_pad_edge(s.y, T) for s in chosen]
            lengths = [len(s.y) for s in chosen]
        x = torch.from_numpy(np.stack(xs))
        y = torch.from_numpy(np.stack(ys))
        lengths_t = torch.tensor(lengths)
        mask = torch.arange(y.shape[1])[None, :] < lengths_t[:, None]
        yield {"x": x, "y": y, "lengths": lengths_t, "mask": mask}


def _pad_edge(a: np.ndarray, T: int) -> np.ndarray:
    if len(a) >= T:
        return a[:T]
    pad = [(0, T - len(a))] + [(0, 0)] * (a.ndim - 1)
    return np.pad(a, pad, mode="edge")


# --- the loop ------------------------------------------------------------------------------------------


def fit_stages(model: torch.nn.Module, rec: Recipe, cfg, train_set: list[Sequence], val_set: list[Sequence], *,
               resume_path: Path, progress: Callable | None = None) -> list[dict]:
    """Run every stage of the recipe with early stopping; resumable from `resume_path`."""
    stages = rec.stages(cfg)
    history: list[dict] = []
    state = _load_resume(resume_path, cfg)
    first_stage = 0
    if state is not None:
        model.load_state_dict(state["model"])
        history = state["history"]
        first_stage = state["stage"]
    for stage_index in range(first_stage, len(stages)):
        stage = stages[stage_index]
        settings = stage.settings or cfg.train
        # A stage may hand over parameters or optimiser groups (e.g. a smaller rate for a pre-trained part).
        groups = list(stage.parameters(model)) if stage.parameters else list(model.parameters())
        params = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
        optimiser = torch.optim.Adam(groups, lr=settings.lr, weight_decay=settings.weight_decay)
        epoch, best_val, best_state, bad_epochs = 0, math.inf, None, 0
        rng = np.random.default_rng(settings.seed + 1000 * stage_index)
        torch.manual_seed(settings.seed + 1000 * stage_index)
        started = time.monotonic()
        elapsed_before = 0.0
        if state is not None and state["stage"] == stage_index:
            optimiser.load_state_dict(state["optimiser"])
            epoch, best_val, bad_epochs = state["epoch"], state["best_val"], state["bad_epochs"]
            best_state = state["best_state"]
            rng.bit_generator.state = state["numpy_rng"]
            torch.set_rng_state(state["torch_rng"])
            elapsed_before = state.get("elapsed", 0.0)
        state = None
        while epoch < settings.max_epochs and bad_epochs < settings.patience:
            model.train()
            train_losses = []
            for batch in make_batches(train_set, settings, rng):
                loss, _ = stage.loss(model, batch)
                if not torch.isfinite(loss):
                    raise TrainingError(f"stage {stage.name}: the loss became {loss.item()} at epoch {epoch + 1}; "
                                        "lower the learning rate (train.lr)")
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                if settings.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
                optimiser.step()
                train_losses.append(float(loss.detach()))
            val_loss = evaluate_loss(model, stage, val_set or train_set, settings)
            epoch += 1
            if val_loss < best_val - settings.min_delta:
                best_val, bad_epochs = val_loss, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
            elapsed = elapsed_before + time.monotonic() - started
            record = {"stage": stage.name, "epoch": epoch, "train_loss": float(np.mean(train_losses)),
                      "val_loss": val_loss, "best_val": best_val, "seconds": round(elapsed, 2)}
            history.append(record)
            _save_resume(resume_path, cfg, model, optimiser, stage_index, epoch, best_val, best_state,
                         bad_epochs, rng, history, elapsed)
            if progress:
                progress({**record, "stage_index": stage_index, "stages": len(stages),
                          "max_epochs": settings.max_epochs})
            if settings.max_seconds and elapsed > settings.max_seconds:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
    return history


@torch.no_grad()
def evaluate_loss(model, stage, seqs: list[Sequence], settings: TrainSettings) -> float:
    was_training = model.training
    model.eval()
    total, weight = 0.0, 0
    for batch in make_batches(seqs, settings, None):
        loss, _ = stage.loss(model, batch)
        n = int(batch["lengths"].sum())
        total += float(loss) * n
        weight += n
    model.train(was_training)
    return total / max(weight, 1)


def _config_hash(cfg) -> str:
    return hashlib.sha256(json.dumps(config_to_dict(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save_resume(path: Path, cfg, model, optimiser, stage, epoch, best_val, best_state, bad_epochs, rng, history,
                 elapsed):
    payload = {"config_hash": _config_hash(cfg), "model": model.state_dict(), "optimiser": optimiser.state_dict(),
               "stage": stage, "epoch": epoch, "best_val": best_val, "best_state": best_state,
               "bad_epochs": bad_epochs, "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
               "history": history, "elapsed": elapsed}
    _atomic_torch_save(payload, path)


def _load_resume(path: Path, cfg):
    if not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=False)
    except Exception:  # a resume file cut short by a crash is worth nothing: start again
        return None
    return state if state.get("config_hash") == _config_hash(cfg) else None


def _atomic_torch_save(payload, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    torch.save(payload, tmp)
    os.replace(tmp, path)


# --- the whole job -------------------------------------------------------------------------------------


def train(kind: str, items: list[CorpusItem], out_path: str | os.PathLike, *, config: dict | None = None,
          cache_dir: str | os.PathLike, progress: Callable | None = None,
          init_from: str | os.PathLike | None = None) -> LoadedModel:
    """Train a model of `kind` on `items` and write its checkpoint to `out_path` (atomically).

    `config` overrides the model's defaults (nested: {"train": {"max_epochs": 50}}). `init_from` is a
    checkpoint whose weights start matching parts of the network (e.g. a pre-trained APC encoder).
    """
    rec = recipe(kind)
    cfg = config_from_dict(rec.Config, config)
    seed_everything(cfg.train.seed)
    out_path = Path(out_path)
    space, sequences = load_sequences(rec, cfg, items, cache_dir=cache_dir, progress=progress)
    return _fit_and_save(rec, cfg, space, sequences, out_path, progress=progress, init_from=init_from)


def train_on_sequences(kind: str, sequences: dict[str, list[Sequence]], space: dict, out_path, *,
                       config: dict | None = None, progress: Callable | None = None) -> LoadedModel:
    """Train from ready-made input/target sequences (the robot inverse model's command/landmark pairs)."""
    rec = recipe(kind)
    cfg = config_from_dict(rec.Config, config)
    seed_everything(cfg.train.seed)
    return _fit_and_save(rec, cfg, space, sequences, Path(out_path), progress=progress)


def _fit_and_save(rec: Recipe, cfg, space, sequences, out_path: Path, *, progress, init_from=None) -> LoadedModel:
    train_seqs = sequences.get("train", [])
    if not train_seqs:
        raise TrainingError("nothing to train on: the train split is empty")
    fnorm = feats.Normalizer.fit([s.x for s in train_seqs])
    tnorm = feats.Normalizer.fit([s.y for s in train_seqs])
    normalised = _normalise(sequences, fnorm, tnorm)
    x0, y0 = normalised["train"][0].x, normalised["train"][0].y
    in_dim = x0.shape[-1] if x0.ndim == 2 else tuple(x0.shape[1:])
    model = rec.build(cfg, in_dim, y0.shape[-1], space)
    initialised = _init_from(model, load_checkpoint(init_from)) if init_from else None
    resume_path = out_path.with_name(out_path.name + ".resume")
    history = fit_stages(model, rec, cfg, normalised["train"], normalised.get("val", []),
                         resume_path=resume_path, progress=progress)
    payload = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "kind": rec.kind,
        "config": config_to_dict(cfg), "feature_spec": _spec_dict(rec.feature_spec(cfg)),
        "feature_norm": fnorm.to_dict(), "target_norm": tnorm.to_dict(), "space": _storable(space),
        "in_dim": in_dim, "out_dim": int(y0.shape[-1]), "model": model.state_dict(), "history": history,
        "initialised_from": initialised,
    }
    _atomic_torch_save(payload, out_path)
    resume_path.unlink(missing_ok=True)
    return load_checkpoint(out_path)


def _init_from(model: torch.nn.Module, source: LoadedModel) -> dict:
    """Copy every parameter whose name and shape match (e.g. `encoder.*` from an APC checkpoint); a
    parameter of the same name but another shape means the two were built differently: refuse."""
    own = model.state_dict()
    theirs = source.model.state_dict()
    clashes = [k for k, v in theirs.items() if k in own and own[k].shape != v.shape]
    if clashes:
        raise TrainingError(f"the {source.kind} checkpoint's {', '.join(clashes[:3])} have other shapes than this "
                            "network's: give both the same sizes (e.g. encoder_hidden = the APC model's hidden)")
    matched = {k: v for k, v in theirs.items() if k in own}
    if not matched:
        raise TrainingError(f"the {source.kind} checkpoint shares no weights with this network")
    own.update(matched)
    model.load_state_dict(own)
    return {"checkpoint": Path(source.path).name, "sha256": source.sha256, "parameters": sorted(matched)}


def _spec_dict(spec):
    return spec.to_dict() if spec is not None else None


def _storable(value):
    """numpy arrays → tensors (torch.load with weights_only=True accepts tensors, not numpy arrays)."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, dict):
        return {k: _storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_storable(v) for v in value]
    return value


def _numpy(value):
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, dict):
        return {k: _numpy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numpy(v) for v in value]
    return value


def load_checkpoint(path: str | os.PathLike) -> LoadedModel:
    path = Path(path)
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise TrainingError(f"no checkpoint at {path}") from None
    except Exception as exc:
        raise TrainingError(f"{path.name} is not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path.name} is not a checkpoint written by this platform")
    rec = recipe(payload["kind"])
    cfg = config_from_dict(rec.Config, payload["config"])
    in_dim = payload["in_dim"]
    in_dim = tuple(in_dim) if isinstance(in_dim, (list, tuple)) else in_dim
    space = _numpy(payload["space"])
    model = rec.build(cfg, in_dim, payload["out_dim"], space)
    model.load_state_dict(payload["model"])
    model.eval()
    spec = feats.FeatureSpec.from_dict(payload["feature_spec"]) if payload["feature_spec"] else None
    return LoadedModel(
        kind=payload["kind"], recipe=rec, config=cfg, model=model, feature_spec=spec,
        feature_norm=feats.Normalizer.from_dict(payload["feature_norm"]),
        target_norm=feats.Normalizer.from_dict(payload["target_norm"]),
        space=space, history=payload.get("history", []), path=str(path),
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )
