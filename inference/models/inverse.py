"""`inverse`: the robot inverse model — facial landmarks in, the robot's motor commands out. It is the last
stage of the audio-to-landmark animatronic study (DESIGN.md): generated 68-point landmarks drove a physical
face with 11 motors through a network that had learnt, from the robot itself, which commands make which
face. The learning set-up is the self-supervised one of Chen et al., "Smile Like You Mean It: Driving
Animatronic Robotic Face with Learned Models" (ICRA 2021): give the robot many commands ("motor babbling"),
track its face while it holds each, and fit a per-frame MLP from what was seen back to what was commanded.

What the network sees and says:
- input: each frame's landmarks, rigidly aligned (rotation and translation, Kabsch) on the points that no
  expression moves (`RIGID_POINTS`: ear-level jaw ends, nose bridge and base, eye corners) to the robot's
  neutral face (its landmarks at the profile's rest commands: given, or estimated from the pairs by
  `neutral_estimate`), so a head turning in the camera's frame does not reach the network; then the
  displacement from that neutral face, only for the coordinates the robot's actuators visibly move (spread
  over the pairs ≥ `min_motion` × the largest spread: a coordinate that never moves on the robot would
  turn tracking noise, or a motion only a human makes, into huge normalised inputs), normalised per
  coordinate and clamped to ±`input_clip` training standard deviations;
- output: one command per face actuator, `lower + (upper − lower) · sigmoid(·)`, so every command lies in
  that actuator's limits (0..1 unless the robot's profile narrows them; a scaled sigmoid rather than a
  clamp, so no gradient is ever cut off); loss: mean squared error in command units;
- head actuators (`head.*`) are not learnt (the alignment takes the head's motion out of the landmarks):
  they follow the clip's head pose through the robot profile (inference/robots.py), pan ← yaw ry,
  tilt ← pitch rx, roll ← roll rz, linear over the actuator's `pose_range_deg` and clamped — ±30° unless
  the profile says otherwise (−30° → 0, 0° → 0.5, +30° → 1; `sim-face`: pan ±25°, tilt ±15°). Without a
  head pose they stay at rest.

At the defaults (two GELU layers of 128, ≈ 40 k parameters) it learns 8 750 pairs — as many frames as
100 utterances of 3.5 s — in about 15 s on one CPU core, and turns a 10 s clip into commands in ≈ 15 ms.

Train with `fit_inverse(commands, landmarks, channels, out_path, robot=...)` (the speech-corpus `train()`
does not apply: `fit_space`/`targets` say so). Use with `apply_inverse(model, clip)`: any clip that
retargets to `landmarks:ibug68` (landmarks, arkit52 blendshapes, OpenFace AUs, PCA shapes) gives a
`motors:<robot>` clip of the same length and frame rate.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..motion import MotionClip, MotionError, retarget
from ..robots import PROFILES, ActuatorSpec, RobotProfile
from . import Recipe, Stage, TrainSettings, config_from_dict
from .common import masked_mse

INPUT_LAYOUT = "landmarks:ibug68"
N_POINTS = 68
# iBUG-68 points that facial expressions leave in place (jaw contour ends at the ears, nose bridge and
# base, eye corners): the frame each face is aligned on. inference/face_geometry.py moves none of them
# (the outer eye corners by under 1 mm at a full squint).
RIGID_POINTS = (0, 16, 27, 28, 29, 30, 33, 36, 39, 42, 45)


def _train_defaults() -> TrainSettings:
    # Pairs come in chunks of `chunk_rows` frames; a batch of 8 chunks is 256 pairs, and the chunks are
    # whole (no cropping: the MLP reads one frame at a time, so a chunk's order means nothing).
    return TrainSettings(max_epochs=400, batch_size=8, lr=3e-3, patience=40, crop_frames=None)


@dataclass
class Config:
    fps: float = 25.0            # only what the checkpoint reports; the MLP works frame by frame at any rate
    hidden: int = 128
    layers: int = 2
    dropout: float = 0.0
    align: bool = True           # rigid alignment on RIGID_POINTS before taking displacements
    min_motion: float = 0.05     # input coordinates: spread ≥ this fraction of the largest spread
    input_clip: float = 5.0      # normalised inputs clamped to ± this many training standard deviations
    chunk_rows: int = 32         # pairs per training Sequence
    train: TrainSettings = field(default_factory=_train_defaults)


class InverseMLP(nn.Module):
    """Landmark displacements (normalised) → face actuator commands, one frame at a time."""

    def __init__(self, in_dim: int, out_dim: int, cfg: Config, *, lower, upper, target_mean, target_std):
        super().__init__()
        layers, width = [], in_dim
        for _ in range(cfg.layers):
            layers += [nn.Linear(width, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout)]
            width = cfg.hidden
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(width, out_dim)
        self.input_clip = float(cfg.input_clip)
        # From the space (not learnt, not saved twice): the actuators' limits and the training loop's
        # target normalisation, so the loss can work in command units.
        for name, value in (("lower", lower), ("upper", upper), ("target_mean", target_mean),
                            ("target_std", target_std)):
            self.register_buffer(name, torch.as_tensor(np.asarray(value, np.float32)), persistent=False)
        with torch.no_grad():  # start at the mean command: the first steps then learn motion, not offsets
            start = ((self.target_mean - self.lower) / (self.upper - self.lower)).clamp(0.02, 0.98)
            self.out.bias.copy_(torch.log(start / (1 - start)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in_dim] normalised displacements → commands [..., out_dim] within the limits."""
        h = self.body(x.clamp(-self.input_clip, self.input_clip))
        return self.lower + (self.upper - self.lower) * torch.sigmoid(self.out(h))

    def normalise(self, commands: torch.Tensor) -> torch.Tensor:
        return (commands - self.target_mean) / self.target_std

    def commands(self, y_normalised: torch.Tensor) -> torch.Tensor:
        return y_normalised * self.target_std + self.target_mean


# --- the robot and its space ---------------------------------------------------------------------------


def robot_for(robot: str | RobotProfile, channels) -> RobotProfile:
    """The profile the model uses for these channels: each channel's spec from the robot's built-in profile
    where it names that actuator, else full range (and the default head mapping for `head.pan/tilt/roll`)."""
    channels = [str(c) for c in channels]
    base = robot if isinstance(robot, RobotProfile) else PROFILES.get(str(robot))
    name = base.name if base is not None else str(robot)
    known = {a.name: a for a in base.actuators} if base is not None else {}
    return RobotProfile(name, tuple(known.get(c) or ActuatorSpec.default(c) for c in channels),
                        latency_ms=base.latency_ms if base is not None else 0.0,
                        description=base.description if base is not None else "")


def _profile(space: dict) -> RobotProfile:
    return RobotProfile.from_dict(space["profile"])


def rigid_align(landmarks: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each frame [T, 68, 3] rotated and moved (no scaling) so its RIGID_POINTS best fit the reference's
    (least squares, Kabsch's SVD solution, reflections excluded)."""
    points = np.asarray(landmarks, np.float64)
    target = np.asarray(reference, np.float64)[list(RIGID_POINTS)]
    source = points[:, list(RIGID_POINTS)]
    source_centre, target_centre = source.mean(axis=1, keepdims=True), target.mean(axis=0)
    cross = np.einsum("tki,kj->tij", source - source_centre, target - target_centre)
    u, _, vt = np.linalg.svd(cross)
    flip = np.sign(np.linalg.det(np.einsum("tji,tkj->tik", vt, u)))  # det(V Uᵀ)
    d = np.ones((len(points), 3))
    d[:, 2] = np.where(flip == 0, 1.0, flip)
    rotation = np.einsum("tji,tj,tkj->tik", vt, d, u)                 # R = V D Uᵀ: target ≈ R · source
    aligned = np.einsum("tnj,tij->tni", points - source_centre, rotation) + target_centre
    return aligned.astype(np.float32)


def landmark_inputs(landmarks: np.ndarray, space: dict) -> np.ndarray:
    """The network's input [T, F] (before normalisation): the chosen coordinates' displacement from the
    robot's reference face, after rigid alignment to it."""
    points = np.asarray(landmarks, np.float32)
    if points.size != len(points) * 3 * N_POINTS:
        raise MotionError(f"the inverse model reads 68 landmarks × xyz per frame, got shape {points.shape}")
    points = points.reshape(len(points), N_POINTS, 3)
    reference = np.asarray(space["reference"], np.float32)
    if space.get("align", True) and len(points):
        points = rigid_align(points, reference)
    idx = np.asarray(space["inputs"], np.int64)
    return points.reshape(len(points), -1)[:, idx] - reference.reshape(-1)[idx]


def _check_pairs(commands, landmarks, channels) -> tuple[np.ndarray, np.ndarray, list[str]]:
    commands = np.asarray(commands, np.float32)
    landmarks = np.asarray(landmarks, np.float32)
    channels = [str(c) for c in channels]
    if commands.ndim != 2 or commands.shape[1] != len(channels):
        raise ValueError(f"commands must be [pairs, {len(channels)}] (one column per channel name), "
                         f"got shape {commands.shape}")
    if landmarks.shape[1:] not in ((N_POINTS, 3), (3 * N_POINTS,)) or len(landmarks) != len(commands):
        raise ValueError(f"landmarks must be [{len(commands)}, 68, 3] (one iBUG-68 face per command row), "
                         f"got shape {landmarks.shape}")
    if not (np.isfinite(commands).all() and np.isfinite(landmarks).all()):
        raise ValueError("the pairs hold NaN or infinite values; drop the frames where tracking failed")
    if commands.min() < -1e-6 or commands.max() > 1 + 1e-6:
        raise ValueError(f"commands must be normalised to 0..1, got {commands.min():.3g}..{commands.max():.3g}")
    if len(set(channels)) != len(channels):
        raise ValueError("a channel name appears twice")
    return np.clip(commands, 0.0, 1.0), landmarks.reshape(len(landmarks), N_POINTS, 3), channels


def neutral_estimate(aligned: np.ndarray, commands: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """The robot's landmarks at its rest commands [68, 3], read off the pairs: a least-squares fit of every
    coordinate on each face actuator's command and its square (actuators add their motions; each one's
    linkage curve is close to quadratic), evaluated at `rest`."""
    def design(c):
        return np.concatenate([np.ones((len(c), 1)), c, c ** 2], axis=1)

    coef, *_ = np.linalg.lstsq(design(commands.astype(np.float64)), aligned.reshape(len(aligned), -1), rcond=None)
    return (design(np.asarray(rest, np.float64)[None]) @ coef).reshape(N_POINTS, 3).astype(np.float32)


def inverse_space(cfg: Config, profile: RobotProfile, train_landmarks: np.ndarray, train_commands: np.ndarray, *,
                  reference: np.ndarray | None = None) -> dict:
    """What the model reads and predicts, fitted on the training pairs (target statistics added by
    `fit_inverse` once the training split is fixed). The reference face is `reference` when given (the
    robot's landmarks recorded at rest), else `neutral_estimate` of the Procrustes-aligned pairs (their
    mean when there are too few pairs for the fit)."""
    face = [i for i, a in enumerate(profile.actuators) if not a.is_head]
    if not face:
        raise ValueError("the robot has no face actuators (all channels are head.*): nothing to learn from "
                         "landmarks; head channels follow the head pose alone")

    def align(points, target):
        return rigid_align(points, target) if cfg.align else points

    if reference is None:  # the Procrustes mean: align to the mean, average again (three rounds settle it)
        reference = train_landmarks.mean(axis=0)
        for _ in range(3 if cfg.align else 0):
            reference = align(train_landmarks, reference).mean(axis=0)
        if len(train_landmarks) > 4 * len(face):
            rest = np.array([profile.actuators[i].rest for i in face])
            reference = neutral_estimate(align(train_landmarks, reference), train_commands[:, face], rest)
    reference = np.asarray(reference, np.float32).reshape(N_POINTS, 3)
    aligned = align(train_landmarks, reference)
    spread = aligned.reshape(len(aligned), -1).std(axis=0)
    if spread.max() <= 0:
        raise ValueError("the landmarks never move across the pairs; the robot's face must be seen moving")
    inputs = np.flatnonzero(spread >= cfg.min_motion * spread.max()).astype(np.int64)
    return {
        "robot": profile.name, "layout": profile.layout, "channels": list(profile.channels),
        "profile": profile.to_dict(), "input_layout": INPUT_LAYOUT, "reference": reference, "align": cfg.align,
        "inputs": inputs, "face": np.asarray(face, np.int64),
        "lower": np.array([profile.actuators[i].lower for i in face], np.float32),
        "upper": np.array([profile.actuators[i].upper for i in face], np.float32),
    }


# --- the recipe ----------------------------------------------------------------------------------------


def _pairs_only(*_args, **_kwargs):
    raise ValueError("the inverse model learns from the robot's command/landmark pairs, not from a speech "
                     "corpus: train it with inference.models.inverse.fit_inverse(commands, landmarks, channels, "
                     "out_path, robot=...)")


def build(cfg: Config, in_dim: int, out_dim: int, space: dict) -> nn.Module:
    if "target_mean" not in space:
        raise ValueError("this space lacks the target statistics; build it with fit_inverse")
    if in_dim != len(space["inputs"]) or out_dim != len(space["face"]):
        raise ValueError(f"the space reads {len(space['inputs'])} coordinates and predicts {len(space['face'])} "
                         f"actuators, but the data have {in_dim} and {out_dim}")
    return InverseMLP(in_dim, out_dim, cfg, lower=space["lower"], upper=space["upper"],
                      target_mean=space["target_mean"], target_std=space["target_std"])


def stages(cfg: Config) -> list[Stage]:
    def loss(model, batch):
        value = masked_mse(model(batch["x"]), model.commands(batch["y"]), batch["mask"])
        return value, {"mse": float(value.detach())}

    return [Stage("inverse", loss)]


def predict(model, cfg, x, lengths=None, *, seeds=None, temperature=None):
    """Normalised targets, as the contract asks (the MLP itself speaks commands)."""
    return model.normalise(model(x))


def motor_clip(space: dict, face_commands: np.ndarray, fps: float, head_pose: np.ndarray | None = None,
               **metadata) -> MotionClip:
    """A `motors:<robot>` clip: face actuators from `face_commands` [T, n_face], head actuators from the head
    pose (at rest without one), every channel clamped to its limits."""
    profile = _profile(space)
    face_commands = np.asarray(face_commands, np.float32)
    values = np.repeat(profile.rest[None, :], len(face_commands), axis=0)
    values[:, np.asarray(space["face"], np.int64)] = face_commands
    followers = [i for i, a in enumerate(profile.actuators) if a.pose_channel]
    if head_pose is not None and followers:
        values[:, followers] = profile.head_commands(head_pose)
    lower = np.array([a.lower for a in profile.actuators], np.float32)
    upper = np.array([a.upper for a in profile.actuators], np.float32)
    return MotionClip(fps=fps, layout=profile.layout, values=np.clip(values, lower, upper),
                      channels=profile.channels, metadata={"units": "normalised motor command 0..1",
                                                           "robot": profile.name, **metadata})


RECIPE = Recipe(
    kind="inverse", Config=Config, feature_spec=lambda cfg: None,
    fit_space=_pairs_only, targets=_pairs_only,
    build=build, stages=stages, predict=predict,
    to_clip=lambda cfg, space, values, fps: motor_clip(space, values, fps), inputs="motion",
    description="robot inverse model: landmarks → motor commands, a per-frame MLP (motor babbling pairs)",
)


# --- training and use ----------------------------------------------------------------------------------


def _config_dict(config: dict | None, seed: int) -> dict:
    """The caller's overrides, with the split's seed as the training seed unless they name one."""
    config = dict(config or {})
    return {**config, "train": {"seed": seed, **dict(config.get("train") or {})}}


def fit_inverse(commands, landmarks, channels, out_path: str | os.PathLike, *, robot: str | RobotProfile,
                config: dict | None = None, val_fraction: float = 0.1, seed: int = 0,
                reference: np.ndarray | None = None, progress=None):
    """Train the inverse model on pairs (commands [N, M] in 0..1 named by `channels`, landmarks [N, 68, 3]
    observed while the robot held them) and write its checkpoint; returns the LoadedModel.

    A random `val_fraction` of the pairs (seeded) is held out for early stopping. `reference`: the robot's
    landmarks [68, 3] recorded at its rest commands, if you have them; otherwise they are estimated from
    the pairs (`neutral_estimate`). Displacements from it are what the network reads, and what
    `apply_inverse(..., source_neutral=...)` carries over from a face of other proportions.
    """
    from ..features import Normalizer
    from ..training import Sequence, train_on_sequences

    commands, landmarks, channels = _check_pairs(commands, landmarks, channels)
    config = _config_dict(config, seed)
    cfg = config_from_dict(Config, config)
    n = len(commands)
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(n * val_fraction))
    if n - n_val < 2:
        raise ValueError(f"{n} pairs are too few to train on; record a few hundred")
    order = np.random.default_rng(seed).permutation(n)
    splits = {"train": order[n_val:], "val": order[:n_val]}

    profile = robot_for(robot, channels)
    space = inverse_space(cfg, profile, landmarks[splits["train"]], commands[splits["train"]],
                          reference=reference)
    x_all = landmark_inputs(landmarks, space)
    y_all = commands[:, space["face"]]
    sequences = {}
    for split, rows in splits.items():
        chunks = [rows[i:i + cfg.chunk_rows] for i in range(0, len(rows), cfg.chunk_rows)]
        sequences[split] = [Sequence(f"{split}-{k}", x_all[c], y_all[c]) for k, c in enumerate(chunks)]
    # The same statistics the training loop fits on these sequences, so the network can undo them.
    target_norm = Normalizer.fit([s.y for s in sequences["train"]])
    space.update(target_mean=target_norm.mean, target_std=target_norm.std)
    return train_on_sequences("inverse", sequences, space, out_path, config=config, progress=progress)


def _loaded(model):
    from ..training import LoadedModel, load_checkpoint

    model = model if isinstance(model, LoadedModel) else load_checkpoint(model)
    if model.kind != "inverse":
        raise ValueError(f"apply_inverse needs an inverse-model checkpoint, got a {model.kind} model")
    return model


@torch.no_grad()
def apply_inverse(model, clip: MotionClip, *, source_neutral: np.ndarray | None = None) -> MotionClip:
    """The robot's commands for a motion clip: a `motors:<robot>` clip of the same length and frame rate.

    The clip is retargeted to iBUG-68 landmarks first (arkit52, openface_au and pca clips work). Face
    actuators come from the network, head actuators from the clip's head pose. `source_neutral` [68, 3]:
    the neutral face of the clip's own geometry (e.g. `face_geometry.NEUTRAL_IBUG68` for blendshape clips);
    when given, the clip's displacements from it are carried onto the robot's neutral face (for a face of
    other proportions than the robot's). Without it the landmarks are read as they are, which suits faces
    of the robot's own geometry (the simulated robot and the platform's blendshape face share
    inference/face_geometry.py). The result holds no head pose of its own: the head's motion is in its
    head channels.
    """
    model = _loaded(model)
    space = model.space
    if clip.layout == space["layout"]:
        return clip
    if clip.layout.startswith("motors:"):
        raise MotionError(f"a {clip.layout} clip is another robot's commands; this model drives {space['robot']}")
    landmarks = retarget(clip, INPUT_LAYOUT).landmarks()
    if source_neutral is not None:
        source_neutral = np.asarray(source_neutral, np.float32).reshape(N_POINTS, 3)
        if space.get("align", True):
            landmarks = rigid_align(landmarks, source_neutral)
        landmarks = landmarks - source_neutral + space["reference"]
    x = model.feature_norm.apply(landmark_inputs(landmarks, space))
    pred = model.recipe.predict(model.model, model.config, torch.from_numpy(x)[None], None, seeds=[0])
    face = model.target_norm.invert(pred[0].numpy())
    return motor_clip(space, face, clip.fps, clip.head_pose, source=f"model:{model.kind}", model=model.kind,
                      checkpoint=os.path.basename(model.path), checkpoint_sha256=model.sha256,
                      input_layout=clip.layout)


__all__ = ["Config", "InverseMLP", "RECIPE", "fit_inverse", "apply_inverse", "motor_clip", "landmark_inputs",
           "inverse_space", "robot_for", "rigid_align", "RIGID_POINTS"]
