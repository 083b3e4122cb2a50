"""Pieces several model files share: the 1 − CCC loss, masked errors, running an LSTM over padded batches,
and the face-region target space (which channels of a layout each region predicts)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..features import FeatureSpec
from ..motion import MotionClip, retarget
from . import Recipe, Stage

REGIONS = ("upper", "middle", "lower")


def ccc_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 − mean concordance correlation over channels, computed over the valid frames of the batch
    (Sadoughi & Busso's objective). pred/target [B, T, D], mask [B, T]."""
    m = mask.unsqueeze(-1).to(pred.dtype)
    n = m.sum(dim=(0, 1)).clamp_min(1.0)
    mu_p = (pred * m).sum(dim=(0, 1)) / n
    mu_t = (target * m).sum(dim=(0, 1)) / n
    dp, dt = (pred - mu_p) * m, (target - mu_t) * m
    var_p = (dp ** 2).sum(dim=(0, 1)) / n
    var_t = (dt ** 2).sum(dim=(0, 1)) / n
    cov = (dp * dt).sum(dim=(0, 1)) / n
    ccc = 2 * cov / (var_p + var_t + (mu_p - mu_t) ** 2 + 1e-8)
    return 1 - ccc.mean()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(pred.dtype)
    return ((pred - target) ** 2 * m).sum() / (m.sum() * pred.shape[-1]).clamp_min(1.0)


def run_lstm(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """A (bidirectional) LSTM over a padded batch; with lengths, padding never reaches the backward pass."""
    if lengths is None or bool((lengths == x.shape[1]).all()):
        return lstm(x)[0]
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    return nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


# --- the face-region target space ----------------------------------------------------------------------


def region_space(clips: list[MotionClip], *, layout: str = "arkit52", regions=REGIONS,
                 min_std: float = 1e-3) -> dict:
    """Which channels of `layout` each region predicts: those that move in the training clips (a channel
    that never moves has no CCC to learn). The others are held at their training mean."""
    values = np.concatenate([retarget(c, layout).values for c in clips])
    probe = retarget(clips[0], layout)
    moving = values.std(axis=0) > min_std
    space = {"layout": layout, "channels": list(probe.channels), "neutral": values.mean(axis=0).astype(np.float32),
             "regions": {}}
    for region in regions:
        idx = [i for i in probe.region_indices(region) if moving[i]]
        if idx:
            space["regions"][region] = idx
    if not space["regions"]:
        raise ValueError("no face channel moves in the training clips; nothing to learn")
    return space


def region_order(space: dict) -> list[int]:
    """The channel indices the network's output columns stand for, region by region."""
    return [i for region in REGIONS for i in space["regions"].get(region, [])]


def region_slices(space: dict) -> dict[str, slice]:
    """Each region's columns in the network's output."""
    slices, start = {}, 0
    for region in REGIONS:
        n = len(space["regions"].get(region, []))
        if n:
            slices[region] = slice(start, start + n)
            start += n
    return slices


def region_targets(space: dict, clip: MotionClip) -> np.ndarray:
    return retarget(clip, space["layout"]).values[:, region_order(space)]


def region_clip(space: dict, values: np.ndarray, fps: float, head_pose: np.ndarray | None = None) -> MotionClip:
    full = np.repeat(np.asarray(space["neutral"], np.float32)[None, :], len(values), axis=0)
    full[:, region_order(space)] = values
    if space["layout"] == "arkit52":
        full = np.clip(full, 0.0, 1.0)
    return MotionClip(fps=fps, layout=space["layout"], values=full, channels=tuple(space["channels"]),
                      head_pose=head_pose)


# --- the region models' training and prediction (separate and joint) --------------------------------------


def ccc_stages(cfg) -> list[Stage]:
    """One stage: the whole network on 1 − CCC of every region's channels."""
    def loss(model, batch):
        value = ccc_loss(model(batch["x"], batch["lengths"]), batch["y"], batch["mask"])
        return value, {"1-ccc": float(value.detach())}

    return [Stage("face", loss)]


def predict_deterministic(model, cfg, x, lengths, *, seeds, temperature=None):
    """A regression network's prediction: no sampling, so seeds and temperature change nothing."""
    return model(x, lengths)


def region_recipe(kind: str, config_class: type, network: type, description: str) -> Recipe:
    """The Recipe of a region model (separate, joint): speech features of `cfg.features` at `cfg.fps`, the
    moving arkit52 channels of each face region as targets, 1 − CCC, deterministic prediction; `network`
    is built as network(in_dim, {region: n_channels}, cfg)."""
    def build(cfg, in_dim: int, out_dim: int, space: dict) -> nn.Module:
        dims = {r: s.stop - s.start for r, s in region_slices(space).items()}
        if sum(dims.values()) != out_dim:
            raise ValueError(f"regions cover {sum(dims.values())} channels but the targets have {out_dim}")
        return network(in_dim, dims, cfg)

    return Recipe(
        kind=kind, Config=config_class, feature_spec=lambda cfg: FeatureSpec(cfg.features, cfg.fps),
        fit_space=lambda cfg, clips: region_space(clips),
        targets=lambda cfg, space, clip: region_targets(space, clip),
        build=build, stages=ccc_stages, predict=predict_deterministic,
        to_clip=lambda cfg, space, values, fps: region_clip(space, values, fps),
        description=description,
    )
