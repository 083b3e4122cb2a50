"""`tiny_gru`: a worked example of bringing your own generator to the platform (docs/models.md).

A small speech → ARKit blendshape network: 80 log-mel bands at the motion frame rate go through one
bidirectional GRU and a linear layer to the arkit52 channels that move in the training clips, grouped by
face region (upper, middle, lower), trained on 1 − CCC as the separate-region models are
(inference/models/separate.py). It is deliberately small and not tuned; it shows every piece of the Recipe
contract (inference/models/__init__.py) written out, so you can swap in your own network.

Register it without touching the platform's code:

    export PYTHONPATH=docs/examples/own_model
    export EVALSITE_MODEL_KINDS=tiny_gru=tiny_gru
    python manage.py train --corpus NAME --model tiny_gru --name my-gru --set train.max_epochs=2
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from inference.features import FeatureSpec
from inference.models import Recipe, Stage, TrainSettings
from inference.models.common import ccc_loss, region_clip, region_order, region_space, region_targets


@dataclass
class Config:
    """Every knob of the model; `manage.py train --set hidden=64 --set train.max_epochs=50` overrides them.
    The checkpoint stores this config, so loading needs nothing else."""

    fps: float = 25.0           # motion frames per second; the features are computed at this rate
    features: str = "logmel"    # any kind of inference/features.py that gives [T, F]: logmel, fbank, mfcc_prosody
    hidden: int = 32            # GRU units per direction
    dropout: float = 0.0
    train: TrainSettings = field(default_factory=TrainSettings)


class TinyGRU(nn.Module):
    """[B, T, F] speech features → [B, T, D] normalised blendshape weights."""

    def __init__(self, in_dim: int, out_dim: int, cfg: Config):
        super().__init__()
        self.gru = nn.GRU(in_dim, cfg.hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(2 * cfg.hidden, out_dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is not None and bool((lengths < x.shape[1]).any()):
            # Pack the padded batch, so that padding never reaches the backward direction.
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            h, _ = self.gru(packed)
            h = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=x.shape[1])[0]
        else:
            h, _ = self.gru(x)
        return self.out(self.dropout(h))


# --- the Recipe: how the training loop (inference/training.py) feeds this network and reads its output ---


def feature_spec(cfg: Config) -> FeatureSpec:
    """The speech features the network listens to, aligned to the motion frames."""
    return FeatureSpec(cfg.features, cfg.fps)


def fit_space(cfg: Config, clips) -> dict:
    """What the model predicts, fitted on the training clips: the arkit52 channels that move, per region
    (clips in other layouts, e.g. openface_au, are retargeted to arkit52 first)."""
    return region_space(clips, layout="arkit52")


def targets(cfg: Config, space: dict, clip):
    """One utterance's target array [T, D]: its moving arkit52 channels in region order."""
    return region_targets(space, clip)


def build(cfg: Config, in_dim: int, out_dim: int, space: dict) -> nn.Module:
    if out_dim != len(region_order(space)):
        raise ValueError(f"the target space has {len(region_order(space))} channels but the targets {out_dim}")
    return TinyGRU(in_dim, out_dim, cfg)


def stages(cfg: Config) -> list[Stage]:
    """One training stage: the whole network on 1 − CCC over the valid (unpadded) frames."""
    def loss(model, batch):
        value = ccc_loss(model(batch["x"], batch["lengths"]), batch["y"], batch["mask"])
        return value, {"1-ccc": float(value.detach())}

    return [Stage("face", loss)]


def predict(model, cfg: Config, x, lengths, *, seeds, temperature=None):
    """Normalised targets [B, T, D]. A regression network draws no noise, so seeds and temperature are
    unused; a sampling model would draw row b's noise from torch.Generator().manual_seed(seeds[b])."""
    return model(x, lengths)


def to_clip(cfg: Config, space: dict, values, fps: float):
    """The prediction [T, D] (already de-normalised) as a MotionClip in the arkit52 layout; channels the
    model does not predict hold their training mean."""
    return region_clip(space, values, fps)


RECIPE = Recipe(
    kind="tiny_gru", Config=Config, feature_spec=feature_spec, fit_space=fit_space, targets=targets, build=build,
    stages=stages, predict=predict, to_clip=to_clip,
    description="worked example: one bidirectional GRU, log-mel → arkit52, 1 − CCC",
)
