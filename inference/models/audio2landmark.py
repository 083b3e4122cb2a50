"""`audio2landmark`: speech → 68 facial landmarks, the network that drove the physical animatronic face
of the seed study through an inverse model (landmarks → motor commands, `inverse`). The study describes it
as log-mel slices → an APC speech encoder → "LSTM + attention" → landmark displacements from a reference
face; this file builds that at demo size.

Per motion frame (25 fps by default) the input is a slice of `context` log-mel frames at 100 frames/s
centred on the frame (`mel_slices`, x [B, T, C, 80]). Top to bottom:

1. speech embedding — the APC encoder (inference/models/apc.py, the same `encoder` module, so an APC
   checkpoint's weights load into it by name) runs over each frame's slice ([B·T, C, 80]); the mean of its
   hidden states over the slice is the frame's embedding. The mean rather than the last state: the last
   state of a causal GRU mostly holds the slice's final frames (APC trains it to look 30 ms ahead), which
   lie 160 ms after the frame at the default context, while the mean weighs the slice evenly around it.
2. a unidirectional LSTM over the frames' embeddings: causal across frames, so padding never reaches a
   real frame, and the whole network's look-ahead stays bounded (half a slice plus the attention window,
   320 ms at the defaults) should it ever drive the robot live.
3. local self-attention: each frame attends (scaled dot product, one head) to the LSTM states within
   `attention_window` frames on either side (±160 ms at the defaults), padding masked out; the result is
   added to the LSTM states and layer-normalised;
4. a linear layer to 204 numbers: every landmark's x, y, z displacement from the reference face.

Targets: the clip retargeted to `landmarks:ibug68` minus the reference, the mean training frame (stored in
the target space as [68, 3]); all 204 coordinates are predicted. Loss: MSE on the normalised displacements
plus `velocity_weight` (0.5) × the MSE of their frame-to-frame differences, which discourages jitter.

Pre-training: the intended path is `train("apc", items, "apc.pt")` then `train("audio2landmark", items, ...,
init_from="apc.pt")`; without `init_from` the encoder starts from random weights (allowed, and then
`freeze_encoder=True` leaves a random projection — rarely what you want). `freeze_encoder=True` trains one
stage ("head") with the encoder fixed: APC features only. With `freeze_encoder=False` (default) a second
stage ("finetune", at most `finetune_epochs`) follows that trains the whole network, encoder included, at
`finetune_lr_scale` × the learning rate — two stages rather than optimiser parameter groups, because the
training loop clips gradients over a flat list of parameters.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..features import FeatureSpec
from ..motion import MotionClip, retarget
from . import Recipe, Stage, TrainSettings
from .apc import APCEncoder

LAYOUT = "landmarks:ibug68"
N_POINTS = 68


@dataclass
class Config:
    fps: float = 25.0
    context: int = 32                # log-mel frames (10 ms each) per motion frame's slice
    encoder_hidden: int = 128        # must equal the APC checkpoint's `hidden` ...
    encoder_layers: int = 2          # ... and `layers` for init_from to copy the encoder
    hidden: int = 128                # LSTM over frames
    lstm_layers: int = 1
    attention_window: int = 4        # frames on either side each frame attends to
    dropout: float = 0.1
    velocity_weight: float = 0.5
    freeze_encoder: bool = False
    finetune_lr_scale: float = 0.1   # learning rate of the fine-tuning stage, relative to train.lr
    finetune_epochs: int = 20        # its max_epochs (the rest of its settings are `train`'s)
    train: TrainSettings = field(default_factory=lambda: TrainSettings(
        max_epochs=40, batch_size=8, lr=2e-3, crop_frames=50, patience=8))


class LocalSelfAttention(nn.Module):
    """Scaled dot-product attention of each frame over the frames within `window` on either side.

    Keys are gathered in a [B, T, 2·window + 1] band rather than a [T, T] matrix, so memory grows with the
    utterance's length, not its square. Neighbours before the start or past a row's length are masked, so
    a real frame never sees padding."""

    def __init__(self, dim: int, window: int):
        super().__init__()
        self.window = window
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        B, T, D = h.shape
        w = self.window
        offsets = torch.arange(-w, w + 1, device=h.device)
        index = torch.arange(T, device=h.device)[:, None] + offsets[None, :]          # [T, 2w+1]
        limit = torch.full((B,), T, device=h.device) if lengths is None else lengths.to(h.device)
        valid = (index[None] >= 0) & (index[None] < limit[:, None, None])               # [B, T, 2w+1]
        valid = valid | (offsets == 0)  # a padded frame attends to itself: no all-masked row, no NaN
        index = index.clamp(0, T - 1)
        q = self.query(h)                                                               # [B, T, D]
        k = self.key(h)[:, index]                                                       # [B, T, 2w+1, D]
        v = self.value(h)[:, index]
        scores = (k @ q.unsqueeze(-1)).squeeze(-1) / D ** 0.5                           # [B, T, 2w+1]
        weights = scores.masked_fill(~valid, float("-inf")).softmax(dim=-1)
        return self.out((weights.unsqueeze(-2) @ v).squeeze(-2))


class Audio2Landmark(nn.Module):
    def __init__(self, n_mels: int, out_dim: int, cfg: Config):
        super().__init__()
        self.encoder = APCEncoder(n_mels, cfg.encoder_hidden, cfg.encoder_layers)
        self.dropout = nn.Dropout(cfg.dropout)
        self.lstm = nn.LSTM(cfg.encoder_hidden, cfg.hidden, num_layers=cfg.lstm_layers, batch_first=True,
                            dropout=cfg.dropout if cfg.lstm_layers > 1 else 0.0)
        self.attention = LocalSelfAttention(cfg.hidden, cfg.attention_window)
        self.norm = nn.LayerNorm(cfg.hidden)
        self.out = nn.Linear(cfg.hidden, out_dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Slices [B, T, C, M] → one speech embedding per frame [B, T, encoder_hidden]."""
        B, T, C, M = x.shape
        states = self.encoder(x.reshape(B * T, C, M))                                  # [B·T, C, H]
        return states.mean(dim=1).reshape(B, T, -1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, *,
                train_encoder: bool = True) -> torch.Tensor:
        """x [B, T, C, M] mel slices → normalised landmark displacements [B, T, 204]."""
        with torch.set_grad_enabled(train_encoder and torch.is_grad_enabled()):
            speech = self.embed(x)
        h = self.lstm(self.dropout(speech))[0]        # causal: real frames never see the padding after them
        h = self.norm(h + self.dropout(self.attention(h, lengths)))
        return self.out(h)


def landmark_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                  velocity_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MSE on the displacements + velocity_weight × MSE on their frame-to-frame differences (over pairs of
    consecutive real frames). Returns (total, position term, velocity term)."""
    m = mask.unsqueeze(-1).to(pred.dtype)
    position = ((pred - target) ** 2 * m).sum() / (m.sum() * pred.shape[-1]).clamp_min(1.0)
    pair = (mask[:, 1:] & mask[:, :-1]).unsqueeze(-1).to(pred.dtype)
    velocity_error = (pred[:, 1:] - pred[:, :-1]) - (target[:, 1:] - target[:, :-1])
    velocity = (velocity_error ** 2 * pair).sum() / (pair.sum() * pred.shape[-1]).clamp_min(1.0)
    return position + velocity_weight * velocity, position, velocity


# --- the recipe ----------------------------------------------------------------------------------------


def feature_spec(cfg: Config) -> FeatureSpec:
    return FeatureSpec("mel_slices", cfg.fps, {"context": cfg.context})


def fit_space(cfg: Config, clips: list[MotionClip]) -> dict:
    """The reference face: the mean landmark frame of the training clips, [68, 3] (mm)."""
    frames = np.concatenate([retarget(c, LAYOUT).landmarks() for c in clips])
    return {"layout": LAYOUT, "reference": frames.mean(axis=0).astype(np.float32)}


def targets(cfg: Config, space: dict, clip: MotionClip) -> np.ndarray:
    points = retarget(clip, LAYOUT).landmarks() - np.asarray(space["reference"], np.float32)[None]
    return points.reshape(len(points), N_POINTS * 3).astype(np.float32)


def build(cfg: Config, in_dim, out_dim: int, space: dict) -> nn.Module:
    if not (isinstance(in_dim, tuple) and len(in_dim) == 2):
        raise ValueError(f"audio2landmark reads mel slices [context, n_mels] per frame, got {in_dim!r}; "
                         f"use the mel_slices features without flatten")
    if out_dim != N_POINTS * 3:
        raise ValueError(f"audio2landmark predicts {N_POINTS * 3} landmark coordinates, the targets have {out_dim}")
    return Audio2Landmark(in_dim[1], out_dim, cfg)


def stages(cfg: Config) -> list[Stage]:
    def loss_fn(train_encoder: bool):
        def loss(model, batch):
            pred = model(batch["x"], batch["lengths"], train_encoder=train_encoder)
            total, position, velocity = landmark_loss(pred, batch["y"], batch["mask"], cfg.velocity_weight)
            return total, {"mse": float(position.detach()), "velocity_mse": float(velocity.detach())}
        return loss

    head = Stage("head", loss_fn(False),
                 parameters=lambda model: (p for name, p in model.named_parameters()
                                           if not name.startswith("encoder.")))
    if cfg.freeze_encoder:
        return [head]
    finetune_settings = dataclasses.replace(cfg.train, lr=cfg.train.lr * cfg.finetune_lr_scale,
                                            max_epochs=cfg.finetune_epochs)
    return [head, Stage("finetune", loss_fn(True), settings=finetune_settings)]


def predict(model, cfg, x, lengths, *, seeds, temperature=None):
    return model(x, lengths)


def to_clip(cfg: Config, space: dict, values: np.ndarray, fps: float) -> MotionClip:
    reference = np.asarray(space["reference"], np.float32).reshape(-1)
    return MotionClip(fps=fps, layout=LAYOUT, values=np.asarray(values, np.float32) + reference[None],
                      head_pose=None)


RECIPE = Recipe(
    kind="audio2landmark", Config=Config, feature_spec=feature_spec, fit_space=fit_space, targets=targets,
    build=build, stages=stages, predict=predict, to_clip=to_clip,
    description="mel slices → APC encoder → LSTM + local attention → 68 landmarks, MSE + velocity",
)
