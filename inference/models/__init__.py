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
- `to_clip(cfg, space, values, fps)` — a MotionClip in a named layout;
- `inputs`, `outputs`, `sampling` — what it declares it does: consumes "speech" (the default) or "motion"
  (the robot inverse model), produces "motion" (the default) or "features" (APC, a speech encoder), and
  whether its samples differ by seed (Glow). Commands decide by these, never by the kind's name.

`KINDS` lists the kinds `train --model KIND` accepts: the built-in ones below plus any registered from
outside the package with the environment variable EVALSITE_MODEL_KINDS="kind=python.module,kind2=module2"
(each module importable, holding a `RECIPE` whose `kind` is that name; see docs/models.md). The variable
is read on every lookup, so it is the same in the web app, the workers and the commands as long as each
process is started with it. `recipe(kind)` imports one lazily, so importing this package costs nothing.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

BUILT_IN_KINDS = {
    "separate": "inference.models.separate",
    "joint": "inference.models.joint",
    "forked": "inference.models.forked",
    "glow": "inference.models.glow",
    "apc": "inference.models.apc",
    "audio2landmark": "inference.models.audio2landmark",
    "inverse": "inference.models.inverse",
}

KINDS_ENV = "EVALSITE_MODEL_KINDS"
# A kind is stored in TrainedModel.kind (30 characters) and typed after `--model`: keep it a plain name.
_KIND_NAME = re.compile(r"^[a-z][a-z0-9_]{0,29}\Z")
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


class ModelKindError(ValueError):
    """A model kind cannot be used: unknown, badly registered, or its module has no usable RECIPE."""


def registered_kinds(text: str | None = None) -> dict[str, str]:
    """The kinds registered from outside the package: EVALSITE_MODEL_KINDS (or `text`) parsed as
    "kind=module,kind2=module2" into {kind: module}. Raises ModelKindError naming the bad entry."""
    text = os.environ.get(KINDS_ENV, "") if text is None else text
    kinds: dict[str, str] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        kind, sep, module = (s.strip() for s in entry.partition("="))
        if not sep or not kind or not module:
            raise ModelKindError(f"{KINDS_ENV}: {entry!r} is not KIND=MODULE (e.g. tiny_gru=my_models.tiny_gru)")
        if not _KIND_NAME.match(kind):
            raise ModelKindError(f"{KINDS_ENV}: kind {kind!r} is not a valid name; use lower-case letters, digits "
                                 f"and _ (starting with a letter, at most 30 characters)")
        if not _MODULE_NAME.match(module):
            raise ModelKindError(f"{KINDS_ENV}: {module!r} (for kind {kind!r}) is not a Python module path such "
                                 f"as my_models.tiny_gru")
        if kind in BUILT_IN_KINDS:
            raise ModelKindError(f"{KINDS_ENV}: kind {kind!r} is built in ({BUILT_IN_KINDS[kind]}); register "
                                 f"your model under another name")
        if kind in kinds:
            raise ModelKindError(f"{KINDS_ENV}: kind {kind!r} is registered twice ({kinds[kind]} and {module}); "
                                 f"keep one")
        kinds[kind] = module
    return kinds


class _Kinds(Mapping):
    """kind → module: the built-in kinds, then those of EVALSITE_MODEL_KINDS (read on every use)."""

    def _all(self) -> dict[str, str]:
        return {**BUILT_IN_KINDS, **registered_kinds()}

    def __getitem__(self, kind: str) -> str:
        return self._all()[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __repr__(self) -> str:
        return f"KINDS({self._all()!r})"


KINDS: Mapping[str, str] = _Kinds()


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


# What a model consumes and what it produces (Recipe.inputs, Recipe.outputs).
INPUTS = ("speech", "motion")
OUTPUTS = ("motion", "features")


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
    # Declared capabilities, read by the commands instead of kind names (a kind registered under any name is
    # handled by what it says it does). The defaults are a speech-driven generator's.
    inputs: str = "speech"      # "speech": features of `feature_spec`; "motion": landmarks (the robot inverse model)
    outputs: str = "motion"     # "motion": `to_clip` gives a clip; "features": a speech encoder such as APC
    sampling: bool = False      # `predict` draws noise from `seeds`: samples of one utterance differ (Glow)

    def __post_init__(self):
        if self.inputs not in INPUTS:
            raise ModelKindError(f"model kind {self.kind!r}: Recipe(inputs={self.inputs!r}) is not one of "
                                 f"{', '.join(INPUTS)}; say what the network consumes")
        if self.outputs not in OUTPUTS:
            raise ModelKindError(f"model kind {self.kind!r}: Recipe(outputs={self.outputs!r}) is not one of "
                                 f"{', '.join(OUTPUTS)}; say what the network produces")

    @property
    def generates_motion_from_speech(self) -> bool:
        """Whether the model turns speech into a motion clip (the models `evaluate_models` scores)."""
        return self.inputs == "speech" and self.outputs == "motion"


def recipe(kind: str) -> Recipe:
    """The Recipe of `kind`, its module imported now. Raises ModelKindError (a ValueError) for an unknown
    kind, a module that cannot be imported, or one without a RECIPE of that kind."""
    kinds = dict(KINDS)
    if kind not in kinds:
        raise ModelKindError(f"unknown model kind {kind!r}; choose one of: {', '.join(kinds)} (or register yours "
                             f"with {KINDS_ENV}=KIND=MODULE)")
    module_name = kinds[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelKindError(f"model kind {kind!r}: cannot import {module_name} ({exc}); put its folder on "
                             f"PYTHONPATH or install it") from None
    found = getattr(module, "RECIPE", None)
    if not isinstance(found, Recipe):
        raise ModelKindError(f"model kind {kind!r}: module {module_name} has no RECIPE (an "
                             f"inference.models.Recipe); define RECIPE = Recipe(kind={kind!r}, ...) in it")
    if found.kind != kind:
        raise ModelKindError(f"model kind {kind!r}: {module_name}.RECIPE is of kind {found.kind!r}; register it "
                             f"as {found.kind}={module_name} (checkpoints record the recipe's own kind)")
    return found


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
