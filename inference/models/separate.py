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

from . import TrainSettings
from .common import region_recipe, run_lstm


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


RECIPE = region_recipe("separate", Config, SeparateBLSTMs,
                       "one BLSTM per face region, 1 − CCC (Sadoughi & Busso)")
