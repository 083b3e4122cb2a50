"""`apc`: Autoregressive Predictive Coding — self-supervised pre-training of a speech encoder (Chung, Hsu,
Tang & Glass, "An unsupervised autoregressive model for speech representation learning", Interspeech 2019).

A unidirectional GRU stack reads 80-band log-mel frames at 100 frames/s and, at every frame t, predicts the
frame `shift` steps ahead (t + n, 30 ms at the default n = 3) through one linear layer; the loss is the L1
distance to that frame. No labels: the targets are the (normalised) input features themselves, which the
training loop hands over as `y` because `targets` returns None. Predicting a few frames ahead rather than
the next one keeps the GRU from copying the slowly varying spectrum and makes it encode the phonetic and
speaker context instead; the paper's representation is the last layer's hidden state.

Paper vs demo size: the paper uses 3 layers of 512 units with residual connections between consecutive
layers; here 2 layers of 128 units (same residual wiring), so pre-training on ~100 utterances takes minutes
on one CPU core.

The GRU stack lives at `model.encoder` (an `APCEncoder`): `train("audio2landmark", ..., init_from="apc.pt")`
copies every parameter whose name and shape match, which is exactly `encoder.*` when the two configs agree
on `hidden` and `layers` (audio2landmark's `encoder_hidden` and `encoder_layers`).

Features: log-mel with a 25 ms window (`window_s`), the analysis `mel_slices` uses (inference/features.py:
same Hann window, 512-point FFT, Slaney mel bank, log(power + 1e-6)); only the frame centres differ, by half
a 10 ms hop. The `logmel` kind's own default window is 64 ms, which would give the encoder smoother spectra
in pre-training than it sees in audio2landmark. Each checkpoint carries its own normaliser in any case.

APC produces no motion: `to_clip` raises.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..features import FeatureSpec
from . import Recipe, Stage, TrainSettings


@dataclass
class Config:
    fps: float = 100.0               # one frame = 10 ms (the paper's hop); clips are resampled to it, unused
    features: str = "logmel"
    window_s: float = 0.025          # analysis window: the one mel_slices uses (see the module docstring)
    hidden: int = 128                # paper: 512
    layers: int = 2                  # paper: 3
    shift: int = 3                   # n: predict the frame this many steps (10 ms each) ahead
    dropout: float = 0.0
    train: TrainSettings = field(default_factory=lambda: TrainSettings(
        max_epochs=60, batch_size=8, lr=1e-3, crop_frames=200, patience=10))


class APCEncoder(nn.Module):
    """A stack of unidirectional GRU layers; from the second layer on, each layer's output is added to its
    input (the paper's residual connections). Causal: frame t's state depends only on frames ≤ t, so the
    padding at the end of a batch never changes the states of real frames."""

    def __init__(self, in_dim: int, hidden: int, layers: int, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(nn.GRU(in_dim if i == 0 else hidden, hidden, batch_first=True)
                                    for i in range(layers))
        self.dropout = nn.Dropout(dropout)
        self.hidden = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, T, F] → the last layer's hidden states [N, T, hidden]."""
        h = x
        for i, gru in enumerate(self.layers):
            out = self.dropout(gru(h)[0])
            h = out if i == 0 else h + out
        return h


class APC(nn.Module):
    def __init__(self, in_dim: int, cfg: Config):
        super().__init__()
        self.encoder = APCEncoder(in_dim, cfg.hidden, cfg.layers, cfg.dropout)
        self.predictor = nn.Linear(cfg.hidden, in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, F] → at each t, the predicted frame t + shift [B, T, F]."""
        return self.predictor(self.encoder(x))


def apc_loss(pred: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor, shift: int) -> torch.Tensor:
    """Mean L1 distance between the prediction made at t and frame t + shift, over every t whose target
    frame is a real one (the last `shift` frames of each utterance have nothing to predict)."""
    if frames.shape[1] <= shift:
        return pred.sum() * 0.0
    valid = mask[:, shift:].unsqueeze(-1).to(pred.dtype)
    error = (pred[:, :-shift] - frames[:, shift:]).abs() * valid
    return error.sum() / (valid.sum() * pred.shape[-1]).clamp_min(1.0)


def feature_spec(cfg: Config) -> FeatureSpec:
    return FeatureSpec(cfg.features, cfg.fps, {"window_s": cfg.window_s})


def build(cfg: Config, in_dim: int, out_dim: int, space: dict) -> nn.Module:
    if not isinstance(in_dim, int):
        raise ValueError(f"APC reads one feature vector per frame, got frames of shape {in_dim}; "
                         f"use a flat feature kind such as logmel")
    if out_dim != in_dim:
        raise ValueError(f"APC predicts its own input, so targets must be the features ({in_dim} wide), got {out_dim}")
    if cfg.shift < 1:
        raise ValueError(f"shift must be at least 1 frame (the paper's n = 3), got {cfg.shift}")
    return APC(in_dim, cfg)


def stages(cfg: Config) -> list[Stage]:
    def loss(model, batch):
        value = apc_loss(model(batch["x"]), batch["y"], batch["mask"], cfg.shift)
        return value, {"l1": float(value.detach())}

    return [Stage("apc", loss)]


def predict(model, cfg, x, lengths, *, seeds, temperature=None):
    """Each frame's prediction of the (normalised) frame `shift` steps later."""
    return model(x)


def to_clip(cfg, space, values, fps):
    raise ValueError("an apc checkpoint is a pre-trained speech encoder and produces no motion; train a motion "
                     "model from it (train('audio2landmark', ..., init_from='apc.pt')) and generate with that")


RECIPE = Recipe(
    kind="apc", Config=Config, feature_spec=feature_spec,
    fit_space=lambda cfg, clips: {"predicts": "features", "shift": cfg.shift},
    targets=lambda cfg, space, clip: None,
    build=build, stages=stages, predict=predict, to_clip=to_clip, outputs="features",
    description="autoregressive predictive coding: a GRU predicts the log-mel frame n steps ahead, L1 (Chung et al.)",
)
