"""`forked`: facial shape from speech, then head pose from the face's latent space — Greenwood, Matthews &
Laycock, "Joint learning of facial expression and head pose from speech" (Interspeech 2018).

A deep bidirectional LSTM reads 40 log filterbank energies (a window two motion frames long, a hop of one)
and predicts facial shape: the first k principal components of 3-D landmarks (k = 8 as in the paper),
fitted on the training clips retargeted to `landmarks:ibug68`. Training runs in two stages:

1. `face` — the face network alone, MSE on the normalised PCA scores;
2. `head` — the face network frozen; a fork taken from its latent layer (the output of its last BLSTM
   layer, just before the face output layer) feeds a head-pose branch (BLSTM + linear) that predicts the
   6-DoF head pose (rx, ry, rz degrees; tx, ty, tz mm), MSE on the normalised pose. Only the branch's
   parameters are trained, and the face network runs without dropout and without gradients, so the face
   prediction cannot change in this stage.

The head branch sees speech only through what the face network learnt about it: the paper's argument is
that facial activity and rigid head motion are strongly linked during speech.

Targets are [face PCA scores (k), head pose (6)] per frame, both normalised per dimension by the training
loop; each stage's loss reads its own columns. The output clip has layout `pca` (channels pc1..pck) with
the basis attached, so `from_pca` or `retarget(clip, "landmarks:ibug68")` give the landmarks, and the
predicted head pose.

Sizes: the paper's networks are deeper and much wider (hundreds of units per layer; see the paper for
its exact configuration). The defaults here — three BLSTM layers of 64 units per direction for the face,
one of 32 for the head branch — are demo-sized, to train in a few minutes on one CPU core.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..features import FeatureSpec
from ..motion import MotionClip, MotionError, PCABasis, fit_pca, retarget
from . import Recipe, Stage, TrainSettings
from .common import masked_mse, run_lstm

LANDMARKS = "landmarks:ibug68"
POSE_DIM = 6
NEGLIGIBLE_VARIANCE = 1e-6  # a component explaining less than this share of the variance is numerical noise


@dataclass
class Config:
    fps: float = 25.0
    features: str = "fbank"    # 40 log filterbank energies, window 2/fps s, hop 1/fps s
    pca_components: int = 8    # k: facial shape components of the 3-D landmarks
    face_hidden: int = 64      # per direction
    face_layers: int = 3
    head_hidden: int = 32      # per direction
    head_layers: int = 1
    dropout: float = 0.1       # between the face network's BLSTM layers (stage 1 only)
    train: TrainSettings = field(default_factory=TrainSettings)


class FaceNetwork(nn.Module):
    """Speech features → latent face layer (deep BLSTM) → PCA scores (linear)."""

    def __init__(self, in_dim: int, face_dim: int, cfg: Config):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, cfg.face_hidden, num_layers=cfg.face_layers, batch_first=True,
                            bidirectional=True, dropout=cfg.dropout if cfg.face_layers > 1 else 0.0)
        self.out = nn.Linear(2 * cfg.face_hidden, face_dim)

    def encode(self, x, lengths=None):
        """The latent face layer [B, T, 2 · face_hidden]: where the head-pose branch forks off."""
        return run_lstm(self.lstm, x, lengths)

    def forward(self, x, lengths=None):
        return self.out(self.encode(x, lengths))


class HeadBranch(nn.Module):
    """Latent face layer → head pose [B, T, 6]. It reads nothing but the latent layer."""

    def __init__(self, latent_dim: int, cfg: Config):
        super().__init__()
        self.lstm = nn.LSTM(latent_dim, cfg.head_hidden, num_layers=cfg.head_layers, batch_first=True,
                            bidirectional=True)
        self.out = nn.Linear(2 * cfg.head_hidden, POSE_DIM)

    def forward(self, latent, lengths=None):
        return self.out(run_lstm(self.lstm, latent, lengths))


class ForkedBLSTM(nn.Module):
    def __init__(self, in_dim: int, face_dim: int, cfg: Config):
        super().__init__()
        self.face_dim = face_dim
        self.face = FaceNetwork(in_dim, face_dim, cfg)
        self.head = HeadBranch(2 * cfg.face_hidden, cfg)

    def forward(self, x, lengths=None):
        """[B, T, face_dim + 6]: face PCA scores, then head pose (both normalised)."""
        latent = self.face.encode(x, lengths)
        face = self.face.out(latent)
        head = self.head(latent, lengths)
        return torch.cat([face, head], dim=-1)

    @torch.no_grad()
    def frozen_latent(self, x, lengths=None):
        """The latent face layer as the head stage sees it: no gradients, no dropout."""
        was_training = self.face.training
        self.face.eval()
        try:
            return self.face.encode(x, lengths)
        finally:
            self.face.train(was_training)


# --- the target space: a PCA basis of 3-D landmarks ----------------------------------------------------


def fit_space(cfg: Config, clips: list[MotionClip]) -> dict:
    """The PCA basis of the training clips' iBUG-68 landmarks. Fewer than `pca_components` are kept when
    the training faces move in fewer independent directions (the rest would be numerical noise)."""
    missing = sum(c.head_pose is None for c in clips)
    if missing:
        raise MotionError(f"the forked model predicts head pose, but {missing} of the {len(clips)} training clips "
                          "have no head pose; import motion with head pose (e.g. OpenFace pose_R*/pose_T* or "
                          "Live Link Face head rotation) or train a face-only model (joint, separate)")
    landmarks = [retarget(c, LANDMARKS) for c in clips]
    most = min(sum(c.n_frames for c in landmarks), landmarks[0].values.shape[1])
    basis = fit_pca(landmarks, k=min(cfg.pca_components, most))
    k = int((basis.explained_variance_ratio > NEGLIGIBLE_VARIANCE).sum())
    if k < 1:
        raise MotionError("the training faces never move; there is no facial shape to learn")
    return {
        "layout": basis.source_layout,
        "channels": list(basis.source_channels),
        "mean": basis.mean,
        "components": basis.components[:k],
        "explained_variance_ratio": basis.explained_variance_ratio[:k],
        "retained_variance": float(basis.explained_variance_ratio[:k].sum()),
    }


def space_basis(space: dict) -> PCABasis:
    return PCABasis(space["layout"], tuple(space["channels"]), np.asarray(space["mean"], np.float32),
                    np.asarray(space["components"], np.float32),
                    np.asarray(space["explained_variance_ratio"], np.float32))


def targets(cfg: Config, space: dict, clip: MotionClip) -> np.ndarray:
    """[T, k + 6]: the face's PCA scores, then the head pose."""
    if clip.head_pose is None:
        raise MotionError("the forked model needs head pose in every clip; this one has none")
    scores = space_basis(space).project(retarget(clip, space["layout"]).values)
    return np.concatenate([scores, clip.head_pose], axis=1).astype(np.float32)


def to_clip(cfg: Config, space: dict, values: np.ndarray, fps: float) -> MotionClip:
    basis = space_basis(space)
    return MotionClip(fps=fps, layout="pca", values=values[:, :basis.k], head_pose=values[:, basis.k:],
                      basis=basis)


# --- the recipe ----------------------------------------------------------------------------------------


def feature_spec(cfg: Config) -> FeatureSpec:
    return FeatureSpec(cfg.features, cfg.fps)


def build(cfg: Config, in_dim: int, out_dim: int, space: dict) -> nn.Module:
    face_dim = len(space["components"])
    if out_dim != face_dim + POSE_DIM:
        raise ValueError(f"targets have {out_dim} columns; the forked model predicts {face_dim} PCA scores "
                         f"and {POSE_DIM} head-pose values")
    return ForkedBLSTM(in_dim, face_dim, cfg)


def stages(cfg: Config) -> list[Stage]:
    def face_loss(model, batch):
        k = model.face_dim
        value = masked_mse(model.face(batch["x"], batch["lengths"]), batch["y"][..., :k], batch["mask"])
        return value, {"face_mse": float(value.detach())}

    def head_loss(model, batch):
        k = model.face_dim
        latent = model.frozen_latent(batch["x"], batch["lengths"])
        value = masked_mse(model.head(latent, batch["lengths"]), batch["y"][..., k:], batch["mask"])
        return value, {"head_mse": float(value.detach())}

    return [Stage("face", face_loss),
            Stage("head", head_loss, parameters=lambda model: model.head.parameters())]


def predict(model, cfg, x, lengths, *, seeds, temperature=None):
    return model(x, lengths)


RECIPE = Recipe(
    kind="forked", Config=Config, feature_spec=feature_spec, fit_space=fit_space, targets=targets,
    build=build, stages=stages, predict=predict, to_clip=to_clip,
    description="deep BLSTM to 8 landmark PCA components, then a head-pose fork from its latent layer "
                "(Greenwood et al.)",
)
