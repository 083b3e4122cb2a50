"""`separate`: one BLSTM per face region — the separate-region models of Sadoughi & Busso, "Joint learning
of speech-driven facial motion with bidirectional long-short term memory" (IVA 2017).

Each region (upper: brows and lids; middle: cheeks and nose; lower: jaw and lips) has its own stack of
bidirectional LSTMs reading 25 MFCCs + F0 + intensity and a linear layer to that region's channels; the
regions share nothing. Loss: 1 − CCC, averaged over the channels. Compare with `joint`, which shares the
lower layers between regions.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..features import FeatureSpec
from . import Recipe, TrainSettings
from .common import (ccc_stages, predict_deterministic, region_clip, region_slices, region_space,
                     region_targets, run_lstm)


@dataclass
class Config:
    fps: float = 25.0
    features: str = "mfcc_prosody"   # 25 MFCC + F0 + intensity; "egemaps" works too
    hidden: int = 64                 # per direction
    layers: int = 2
    dropout: float = 0.1
    train: TrainSettings = field(default_factory=TrainSettings)


class RegionBLSTM(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, cfg: Config):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, cfg.hidden, num_layers=cfg.layers, batch_first=True, bidirectional=True,
                            dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.out = nn.Linear(2 * cfg.hidden, out_dim)

    def forward(self, x, lengths=None):
        return self.out(run_lstm(self.lstm, x, lengths))


class SeparateBLSTMs(nn.Module):
    """One RegionBLSTM per region; outputs concatenated in region order (upper, middle, lower)."""

    def __init__(self, in_dim: int, region_dims: dict[str, int], cfg: Config):
        super().__init__()
        self.regions = nn.ModuleDict({r: RegionBLSTM(in_dim, d, cfg) for r, d in region_dims.items()})

    def forward(self, x, lengths=None):
        return torch.cat([net(x, lengths) for net in self.regions.values()], dim=-1)


def feature_spec(cfg: Config) -> FeatureSpec:
    return FeatureSpec(cfg.features, cfg.fps)


def build(cfg: Config, in_dim: int, out_dim: int, space: dict) -> nn.Module:
    dims = {r: s.stop - s.start for r, s in region_slices(space).items()}
    if sum(dims.values()) != out_dim:
        raise ValueError(f"regions cover {sum(dims.values())} channels but the targets have {out_dim}")
    return SeparateBLSTMs(in_dim, dims, cfg)


RECIPE = Recipe(
    kind="separate", Config=Config, feature_spec=feature_spec,
    fit_space=lambda cfg, clips: region_space(clips),
    targets=lambda cfg, space, clip: region_targets(space, clip),
    build=build, stages=ccc_stages, predict=predict_deterministic,
    to_clip=lambda cfg, space, values, fps: region_clip(space, values, fps),
    description="one BLSTM per face region, 1 − CCC (Sadoughi & Busso)",
)
