"""`glow`: a conditional Glow over motion windows — the speech-driven flow of Jonell, Kucherenko, Henter &
Beskow, "Let's face it: probabilistic multi-modal interlocutor-aware generation of facial gestures in dyadic
settings" (IVA 2020), built on MoGlow (Henter, Alexanderson & Beskow, "MoGlow: probabilistic and
controllable motion synthesis using normalising flows", SIGGRAPH Asia 2020).

It generated brow, blink and head motion from speech spectra for a Furhat robot and a virtual agent. Here
it models, by default, the arkit52 channels of the brows, blinks, lid widening and squinting — as the paper
did — and also of the jaw and lips, so that a Glow condition can stand on its own on an avatar, all
together with the head's rotation (rx, ry, rz in degrees), given 80-band log-mel spectra. Set
`face_channels` to the first four prefixes to reproduce the paper's brow/blink/head model.

The flow maps a motion window x ∈ R^{D×T} (channels × frames) to z of the same shape through K steps, each
  ActNorm (per-channel scale and bias, initialised from the first batch)
  → invertible 1×1 convolution over channels (LU-decomposed, so log|det W| is a sum)
  → affine coupling: a temporal conv net reads one half of the channels and the speech context and gives a
    scale s (Glow's sigmoid(h + 2), kept above `min_scale`) and shift t for the other half; its last layer
    starts at zero.
A speech encoder (dilated 1-D convolutions over the log-mel frames) gives the per-frame context every
coupling reads. The prior is a standard normal, so log p(x | speech) = log N(z) + Σ log-dets exactly. The
loss is the mean negative log-likelihood per frame and channel; in training the targets get a little
Gaussian noise (dequantisation), since blinks and clipped channels repeat exact values.

No layer squeezes time, so every log-det term and the prior are sums over frames; with a mask, the padded
frames are left out of every sum and zeroed inside every convolution, so they change nothing — a padded
row's likelihood equals that of the row alone. The flow is fully convolutional: training uses random
windows of `window` frames, the likelihood of a whole utterance is one pass.

Sampling draws one noise sequence z ~ N(0, τ² I) for the whole utterance from the utterance's own seed,
runs the inverse flow over windows of `window` frames with 50 % overlap (overlapping windows share their
noise, so they agree but for their edges) and cross-fades the windows with a Hann weight. Temperature 0
gives the mean path (z = 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..features import FeatureSpec
from ..layouts import ARKIT52, layout
from ..motion import MotionClip, retarget
from . import Recipe, Stage, TrainSettings
from .common import region_clip, region_order

LOG_2PI = math.log(2 * math.pi)


@dataclass
class Config:
    fps: float = 25.0
    features: str = "logmel"
    # arkit52 channel-name prefixes the model may predict (those that move in the training clips)
    face_channels: tuple = ("brow", "eyeBlink", "eyeWide", "eyeSquint", "jaw", "mouth")
    window: int = 160           # frames per generated window; keep train.crop_frames the same
    steps: int = 8              # flow steps K
    hidden: int = 64            # coupling nets' channels
    kernel: int = 3             # coupling nets' temporal kernel
    speech_hidden: int = 64     # speech context channels
    speech_layers: int = 3      # dilated convolutions (dilation 1, 2, 4, ...) over the log-mel frames
    temperature: float = 0.8    # sampling temperature when none is asked for
    # Gaussian noise (in normalised units) added to the targets in training. Motion with exact repeats
    # (blinks clipped at 0, binary eyelids) has no proper density: without it the flow squeezes those
    # values into spikes and samples from elsewhere in z explode on the way back.
    train_noise: float = 0.05
    min_scale: float = 0.05     # the couplings' scale lies in (min_scale, 1), so no inverse step grows > 20×
    train: TrainSettings = field(default_factory=lambda: TrainSettings(
        crop_frames=160, batch_size=8, lr=1e-3, max_epochs=120, patience=15))


# --- layers --------------------------------------------------------------------------------------------
# Every layer works on [B, C, T] with a mask m [B, 1, T] (1 valid, 0 padding) and returns per-frame
# log-dets [B, T]; `reverse` undoes `forward` exactly.


class ActNorm(nn.Module):
    """z = (x + b) · exp(logs), per channel; b and logs start so the first batch's valid frames come out with
    zero mean and unit variance, then they are learnt."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1))
        self.register_buffer("initialised", torch.tensor(False))

    @torch.no_grad()
    def _initialise(self, x, m):
        n = m.sum(dim=(0, 2), keepdim=True).clamp_min(1.0)
        mean = (x * m).sum(dim=(0, 2), keepdim=True) / n
        var = (((x - mean) * m) ** 2).sum(dim=(0, 2), keepdim=True) / n
        self.bias.copy_(-mean)
        self.logs.copy_(-0.5 * torch.log(var.clamp_min(1e-4)))  # a still channel gets a finite scale
        self.initialised.fill_(True)

    def forward(self, x, cond, m):
        if self.training and not bool(self.initialised):
            self._initialise(x, m)
        z = (x + self.bias) * torch.exp(self.logs)
        return z, self.logs.sum().expand(x.shape[0], x.shape[2])

    def reverse(self, z, cond, m):
        return z * torch.exp(-self.logs) - self.bias


class InvConv1x1(nn.Module):
    """z = W x at every frame, W = P L (U + diag(sign · exp(log_s))) from the LU decomposition of a random
    rotation, so log|det W| = Σ log_s."""

    def __init__(self, channels: int):
        super().__init__()
        rotation = torch.linalg.qr(torch.randn(channels, channels))[0]
        P, L, U = torch.linalg.lu(rotation)
        diag = torch.diagonal(U)
        self.register_buffer("P", P)
        self.register_buffer("sign", torch.sign(diag))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(L * self.lower_mask)
        self.upper = nn.Parameter(torch.triu(U, 1))
        self.log_s = nn.Parameter(torch.log(diag.abs()))

    def weight(self):
        eye = torch.eye(self.P.shape[0], dtype=self.P.dtype, device=self.P.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign * torch.exp(self.log_s))
        return self.P @ lower @ upper

    def forward(self, x, cond, m):
        z = torch.einsum("ij,bjt->bit", self.weight(), x)
        return z, self.log_s.sum().expand(x.shape[0], x.shape[2])

    def reverse(self, z, cond, m):
        return torch.einsum("ij,bjt->bit", torch.linalg.inv(self.weight()), z)


class MaskedConvNet(nn.Module):
    """1-D convolutions over time with ReLUs between them; the output of every layer is zeroed at padded
    frames, so padding never reaches a valid frame (as if the sequence ended there)."""

    def __init__(self, sizes: list[int], kernels: list[int], dilations: list[int], *, final_relu: bool):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Conv1d(a, b, k, dilation=d, padding=d * (k - 1) // 2)
            for a, b, k, d in zip(sizes[:-1], sizes[1:], kernels, dilations))
        self.final_relu = final_relu

    def forward(self, h, m):
        for i, layer in enumerate(self.layers):
            h = layer(h * m)
            if i < len(self.layers) - 1 or self.final_relu:
                h = F.relu(h)
        return h * m


class AffineCoupling(nn.Module):
    """The first D // 2 channels (x_a) pass unchanged; the other half is z_b = (x_b + t) · s with s and t from
    a temporal conv net over x_a and the speech context; s = min_scale + (1 − min_scale) · sigmoid(h + 2),
    Glow's bounded scale kept away from 0 so the inverse stays tame. With D = 1, x_a is empty and s, t come
    from the speech alone."""

    def __init__(self, channels: int, cond_channels: int, cfg: Config):
        super().__init__()
        if cfg.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd so a frame's context is centred on it, got {cfg.kernel}")
        self.n_a = channels // 2
        self.n_b = channels - self.n_a
        self.min_scale = float(cfg.min_scale)
        self.net = MaskedConvNet([self.n_a + cond_channels, cfg.hidden, cfg.hidden, 2 * self.n_b],
                                 [cfg.kernel, 1, cfg.kernel], [1, 1, 1], final_relu=False)
        last = self.net.layers[-1]
        nn.init.zeros_(last.weight)  # each step starts as (nearly) the identity: t = 0, s ≈ sigmoid(2)
        nn.init.zeros_(last.bias)
        if not 0 <= self.min_scale < 1:
            raise ValueError(f"min_scale must lie in [0, 1), got {cfg.min_scale}")

    def _scale_shift(self, x_a, cond, m):
        h = self.net(torch.cat([x_a, cond], dim=1), m)
        t, raw = h[:, :self.n_b], h[:, self.n_b:]
        log_s = torch.log(self.min_scale + (1 - self.min_scale) * torch.sigmoid(raw + 2.0))
        return log_s, t

    def forward(self, x, cond, m):
        x_a, x_b = x[:, :self.n_a], x[:, self.n_a:]
        log_s, t = self._scale_shift(x_a, cond, m)
        z_b = (x_b + t) * torch.exp(log_s)
        return torch.cat([x_a, z_b], dim=1), log_s.sum(dim=1)

    def reverse(self, z, cond, m):
        z_a, z_b = z[:, :self.n_a], z[:, self.n_a:]
        log_s, t = self._scale_shift(z_a, cond, m)
        return torch.cat([z_a, z_b * torch.exp(-log_s) - t], dim=1)


class FlowStep(nn.Module):
    def __init__(self, channels: int, cond_channels: int, cfg: Config):
        super().__init__()
        self.layers = nn.ModuleList([ActNorm(channels), InvConv1x1(channels),
                                     AffineCoupling(channels, cond_channels, cfg)])

    def forward(self, x, cond, m):
        logdet = 0.0
        for layer in self.layers:
            x, ld = layer(x, cond, m)
            logdet = logdet + ld
        return x, logdet

    def reverse(self, z, cond, m):
        for layer in reversed(self.layers):
            z = layer.reverse(z, cond, m)
        return z


class SpeechEncoder(nn.Module):
    """Per-frame speech context: dilated convolutions (1, 2, 4, ...) over the log-mel frames, ~0.6 s wide
    with the defaults."""

    def __init__(self, in_dim: int, cfg: Config):
        super().__init__()
        n = cfg.speech_layers
        self.net = MaskedConvNet([in_dim] + [cfg.speech_hidden] * n, [3] * n, [2 ** i for i in range(n)],
                                 final_relu=True)

    def forward(self, speech, m):
        return self.net(speech, m)


class ConditionalGlow(nn.Module):
    """The whole flow. Public tensors are time-major like the training batches: motion [B, T, D], speech
    [B, T, F], mask [B, T] (True: valid frame)."""

    def __init__(self, speech_dim: int, motion_dim: int, cfg: Config):
        super().__init__()
        self.motion_dim = motion_dim
        self.encoder = SpeechEncoder(speech_dim, cfg)
        self.steps = nn.ModuleList(FlowStep(motion_dim, cfg.speech_hidden, cfg) for _ in range(cfg.steps))

    @staticmethod
    def _mask(like: torch.Tensor, mask) -> torch.Tensor:
        if mask is None:
            return torch.ones(like.shape[0], 1, like.shape[1], dtype=like.dtype, device=like.device)
        return mask.to(like.dtype)[:, None, :]

    def forward(self, motion, speech, mask=None):
        """motion → (z [B, T, D], per-frame log|det| [B, T])."""
        m = self._mask(motion, mask)
        cond = self.encoder(speech.transpose(1, 2), m)
        h, logdet = motion.transpose(1, 2), 0.0
        for step in self.steps:
            h, ld = step(h, cond, m)
            logdet = logdet + ld
        return h.transpose(1, 2), logdet

    def reverse(self, z, speech, mask=None):
        """z [B, T, D] → motion [B, T, D]."""
        m = self._mask(z, mask)
        cond = self.encoder(speech.transpose(1, 2), m)
        h = z.transpose(1, 2)
        for step in reversed(self.steps):
            h = step.reverse(h, cond, m)
        return h.transpose(1, 2)

    def log_prob_frames(self, motion, speech, mask=None):
        """log p of each frame [B, T] in nats (prior + every log-det, summed over channels); 0 where masked."""
        z, logdet = self(motion, speech, mask)
        prior = -0.5 * (z ** 2 + LOG_2PI).sum(dim=-1)
        m = self._mask(motion, mask)[:, 0]
        return (prior + logdet) * m

    def log_prob(self, motion, speech, mask=None):
        """Exact log p(motion | speech) of each row [B]: log N(z) + Σ log-dets over the valid frames."""
        return self.log_prob_frames(motion, speech, mask).sum(dim=1)


# --- the recipe ----------------------------------------------------------------------------------------


def feature_spec(cfg: Config) -> FeatureSpec:
    return FeatureSpec(cfg.features, cfg.fps)


def fit_space(cfg: Config, clips: list[MotionClip], *, min_std: float = 1e-3, min_head_std: float = 1e-2) -> dict:
    """The arkit52 channels named by `cfg.face_channels` and the head rotations that move in `clips`."""
    without_pose = [i for i, c in enumerate(clips) if c.head_pose is None]
    if without_pose:
        raise ValueError(f"glow learns head rotation with the face, but {len(without_pose)} of {len(clips)} training "
                         f"clips have no head pose (first: clip {without_pose[0]}); import motion with head pose "
                         "(e.g. OpenFace pose_R* columns) or train another model kind")
    faces = np.concatenate([retarget(c, "arkit52").values for c in clips])
    heads = np.concatenate([c.head_pose for c in clips])
    prefixes = tuple(cfg.face_channels)
    face_std = faces.std(axis=0)
    chosen = {i for i, name in enumerate(ARKIT52) if name.startswith(prefixes) and face_std[i] > min_std}
    head = [i for i in range(3) if heads[:, i].std() > min_head_std]
    if not chosen and not head:
        raise ValueError("neither the chosen face channels nor the head rotation move in the training clips; "
                         "nothing to learn")
    regions = {r: [i for i in idx if i in chosen] for r, idx in layout("arkit52").regions.items()}
    return {"layout": "arkit52", "channels": list(ARKIT52), "neutral": faces.mean(axis=0).astype(np.float32),
            "regions": {r: idx for r, idx in regions.items() if idx}, "head": head,
            "head_neutral": heads[:, :3].mean(axis=0).astype(np.float32)}


def targets(cfg: Config, space: dict, clip: MotionClip) -> np.ndarray:
    """[T, D]: the chosen face channels (upper, middle, lower), then the chosen head rotations (degrees)."""
    if clip.head_pose is None:
        raise ValueError("glow needs head pose in every clip, and this one has none; import it with head pose")
    face = retarget(clip, "arkit52").values[:, region_order(space)]
    head = clip.head_pose[:, list(space["head"])]
    return np.concatenate([face, head], axis=1).astype(np.float32)


def to_clip(cfg: Config, space: dict, values: np.ndarray, fps: float) -> MotionClip:
    """arkit52 with the other channels at their training mean; head pose with the predicted rotations (the
    others at their training mean) and no translation."""
    n_face = len(region_order(space))
    head_pose = np.zeros((len(values), 6), np.float32)
    head_pose[:, :3] = np.asarray(space["head_neutral"], np.float32)
    head_pose[:, list(space["head"])] = values[:, n_face:]
    return region_clip(space, values[:, :n_face], fps, head_pose=head_pose)


def build(cfg: Config, in_dim: int, out_dim: int, space: dict) -> nn.Module:
    expected = len(region_order(space)) + len(space["head"])
    if expected != out_dim:
        raise ValueError(f"the target space has {expected} channels but the targets have {out_dim}")
    if cfg.window < 2:
        raise ValueError(f"window must be at least 2 frames, got {cfg.window}")
    return ConditionalGlow(in_dim, out_dim, cfg)


def stages(cfg: Config) -> list[Stage]:
    def loss(model, batch):
        # Mean negative log-likelihood per valid frame and channel, in nats (normalised target units);
        # in training, of the targets plus a little noise (see Config.train_noise).
        y = batch["y"]
        if model.training and cfg.train_noise > 0:
            y = y + cfg.train_noise * torch.randn_like(y)
        log_p = model.log_prob_frames(y, batch["x"], batch["mask"])
        n = batch["mask"].sum().clamp_min(1) * batch["y"].shape[-1]
        value = -log_p.sum() / n
        return value, {"nll": float(value.detach())}

    return [Stage("flow", loss)]


def log_likelihood(model, cfg, x, cond, mask=None, *, target_std=None) -> torch.Tensor:
    """Exact log-likelihood of each frame [B, T] (nats, summed over channels; 0 at masked frames) of the
    normalised motion `x` [B, T, D] given the normalised speech `cond` [B, T, F] — whole utterances in one
    pass. With `target_std` (the target normaliser's std), the densities are in the clip's own units
    (per frame, − Σ log std). Average over valid frames for a per-frame figure."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            frames = model.log_prob_frames(x, cond, mask)
    finally:
        model.train(was_training)
    if target_std is not None:
        correction = float(np.log(np.asarray(target_std, np.float64)).sum())
        m = torch.ones_like(frames) if mask is None else mask.to(frames.dtype)
        frames = frames - correction * m
    return frames


# --- generation ----------------------------------------------------------------------------------------


def window_starts(n_frames: int, window: int) -> list[int]:
    """Window starts with a hop of half a window, the last window reaching the end (it may hang over it;
    the overhang is masked)."""
    hop = max(window // 2, 1)
    return list(range(0, max(n_frames - hop, 1), hop)) if n_frames > window else [0]


def crossfade_weights(window: int) -> torch.Tensor:
    """sin² (a Hann window shifted half a frame so no frame weighs zero); at a hop of half a window two
    neighbours' weights sum to one."""
    return torch.sin(math.pi * (torch.arange(window, dtype=torch.float64) + 0.5) / window) ** 2


def overlap_add(windows: torch.Tensor, starts: list[int], n_frames: int, valid: torch.Tensor | None = None):
    """Cross-fade windows [N, W, D] placed at `starts` into one sequence [n_frames, D]: a weighted average
    with `crossfade_weights`, so a constant stays constant. `valid` [N, W] leaves out overhanging frames."""
    N, W, D = windows.shape
    weight = crossfade_weights(W).to(windows.dtype)[None, :].expand(N, W)
    if valid is not None:
        weight = weight * valid.to(windows.dtype)
    total = windows.new_zeros(max(n_frames, max(starts) + W), D)
    norm = windows.new_zeros(total.shape[0])
    for k, s in enumerate(starts):
        total[s:s + W] += windows[k] * weight[k, :, None]
        norm[s:s + W] += weight[k]
    return (total / norm.clamp_min(1e-12)[:, None])[:n_frames]


def _pad_edge(a: torch.Tensor, T: int) -> torch.Tensor:
    if len(a) >= T:
        return a[:T]
    return torch.cat([a, a[-1:].expand(T - len(a), *a.shape[1:])])


@torch.no_grad()
def predict(model, cfg, x, lengths, *, seeds, temperature=None):
    """Sampled motion [B, T, D] (normalised) for speech x [B, T, F]. Row b draws its noise from
    `torch.Generator().manual_seed(seeds[b])` for its own length, so batching changes nothing."""
    temperature = cfg.temperature if temperature is None else float(temperature)
    if temperature < 0:
        raise ValueError(f"temperature must be zero or more, got {temperature}")
    B, T = x.shape[:2]
    W, D = cfg.window, model.motion_dim
    lengths = [int(n) for n in (lengths if lengths is not None else [T] * B)]
    speech, noise, valid, plan = [], [], [], []
    for b in range(B):
        n = lengths[b]
        starts = window_starts(n, W)
        span = starts[-1] + W
        g = torch.Generator().manual_seed(int(seeds[b]))
        z = torch.randn(span, D, generator=g) * temperature  # one noise sequence: overlapping windows share it
        feats = _pad_edge(x[b, :n], span)
        frames = torch.arange(span) < n
        for s in starts:
            speech.append(feats[s:s + W]); noise.append(z[s:s + W]); valid.append(frames[s:s + W])
        plan.append((n, starts))
    speech = torch.stack(speech).to(x.dtype)
    noise = torch.stack(noise).to(x.dtype)
    valid = torch.stack(valid)
    windows = model.reverse(noise, speech, valid)
    out = x.new_zeros(B, T, D)
    k = 0
    for b, (n, starts) in enumerate(plan):
        rows = slice(k, k + len(starts))
        out[b, :n] = overlap_add(windows[rows], starts, n, valid[rows])
        out[b, n:] = out[b, n - 1] if n else 0.0
        k += len(starts)
    return out


RECIPE = Recipe(
    kind="glow", Config=Config, feature_spec=feature_spec, fit_space=fit_space, targets=targets, build=build,
    stages=stages, predict=predict, to_clip=to_clip,
    description="conditional Glow over motion windows: brows, blinks and head rotation from log-mel "
                "(Jonell et al. 2020, MoGlow)",
    extras={"log_likelihood": log_likelihood}, sampling=True,
)
