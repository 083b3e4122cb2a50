"""The generator networks, one readable file each, and the contract that ties a network to its data.

Every model file holds a `Config` dataclass (its knobs, with the defaults of its paper at demo size), the
torch modules, and a `RECIPE` object that tells the training loop (inference/training.py) what to feed it
and how to read its output:

- `feature_spec(cfg)` — the speech features it listens to (inference/features.py), or None for the
  robot inverse model, whose input is motion;
- `fit_space(cfg, clips)` — what the model predicts, fitted on the training clips (channel subsets, a PCA
  basis, a reference frame); plain numbers and numpy arrays, stored in the checkpoint;
- `targets(cfg, space, clip)` — one utterance's target array [T, D] (None: the features themselves, for
  self-supervised pre-training such as APC);
- `build(cfg, in_dim, out_dim, space)` — the network;
- `stages(cfg)` — one or more training stages (e.g. face first, then the head-pose fork), each with its loss
  and the parameters it trains;
- `predict(model, cfg, x, lengths, *, seeds, temperature)` — normalised targets [B, T, D]; a sampling
  model draws row b's noise from `torch.Generator().manual_seed(seeds[b])`, so batching changes nothing;
- `to_clip(cfg, space, values, fps)` — a MotionClip in a named layout.

`KINDS` lists the kinds `train --model KIND` accepts; `recipe(kind)` imports one lazily, so importing this
package costs nothing.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

KINDS = {
    "separate": "inference.models.separate",
    "joint": "inference.models.joint",
    "forked": "inference.models.forked",
    "glow": "inference.models.glow",
    "apc": "inference.models.apc",
    "audio2landmark": "inference.models.audio2landmark",
    "inverse": "inference.models.inverse",
}


@dataclass
class TrainSettings:
    """The few knobs of the explicit training loop (nanoGPT style)."""

    max_epochs: int = 200
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.0
    patience: int = 15          # epochs without a better validation loss before stopping
    min_delta: float = 1e-4     # what counts as better
    crop_frames: int | None = 100  # random training windows of this many frames (None: whole utterances)
    grad_clip: float = 1.0
    seed: int = 0
    max_seconds: float | None = None  # a wall-clock budget per stage (demo-size runs)


@dataclass
class Stage:
    """One phase of training: a loss over a batch and the parameters it updates (None: all)."""

    name: str
    loss: Callable[[Any, dict], tuple[Any, dict]]
    parameters: Callable[[Any], Iterable] | None = None
    settings: TrainSettings | None = None  # overrides the config's `train` settings for this stage


@dataclass
class Recipe:
    kind: str
    Config: type
    feature_spec: Callable
    fit_space: Callable
    targets: Callable
    build: Callable
    stages: Callable
    predict: Callable
    to_clip: Callable
    description: str = ""
    extras: dict = field(default_factory=dict)


def recipe(kind: str) -> Recipe:
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of: {', '.join(KINDS)}")
    return importlib.import_module(KINDS[kind]).RECIPE


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def config_from_dict(cls, data: dict | None):
    """Build config dataclass `cls` from a (possibly partial) dict; nested dataclasses included. Unknown keys
    are an error that names them and lists the known ones."""
    data = dict(data or {})
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)} for {cls.__module__.rsplit('.', 1)[-1]}; "
                         f"known: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in data.items():
        default = known[name].default_factory() if known[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            # Start from the model's own default (e.g. Glow's 160-frame crops), not the class's.
            nested = config_from_dict(type(default), value)
            value = dataclasses.replace(default, **{k: getattr(nested, k) for k in value})
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)
