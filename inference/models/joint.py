"""`joint`: a multitask BLSTM — shared bidirectional LSTM layers, then one head per face region
(Sadoughi & Busso, "Joint learning of speech-driven facial motion with bidirectional long-short term
memory", IVA 2017).

The shared layers learn what all regions need from 25 MFCCs + F0 + intensity; each region's head (one
more BLSTM layer and a linear output) specialises. Loss: 1 − CCC averaged over every region's channels,
so each task weighs by its number of channels. Compare with `separate`.
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
    features: str = "mfcc_prosody"
    hidden: int = 64          # per direction, shared and head layers alike
    shared_layers: int = 2
    dropout: float = 0.1
    train: TrainSettings = field(default_factory=TrainSettings)


class RegionHead(nn.Module):
    def __init__(self, hidden: int, out_dim: int):
        super().__init__()
        self.lstm = nn.LSTM(2 * hidden, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, out_dim)

    def forward(self, h, lengths=None):
        return self.out(run_lstm(self.lstm, h, lengths))


class JointBLSTM(nn.Module):
    def __init__(self, in_dim: int, region_dims: dict[str, int], cfg: Config):
        super().__init__()
        self.shared = nn.LSTM(in_dim, cfg.hidden, num_layers=cfg.shared_layers, batch_first=True,
                              bidirectional=True, dropout=cfg.dropout if cfg.shared_layers > 1 else 0.0)
        self.dropout = nn.Dropout(cfg.dropout)
        self.heads = nn.ModuleDict({r: RegionHead(cfg.hidden, d) for r, d in region_dims.items()})

    def forward(self, x, lengths=None):
        h = self.dropout(run_lstm(self.shared, x, lengths))
        return torch.cat([head(h, lengths) for head in self.heads.values()], dim=-1)


RECIPE = region_recipe("joint", Config, JointBLSTM,
                       "shared BLSTM layers with a head per face region, 1 − CCC (Sadoughi & Busso)")
