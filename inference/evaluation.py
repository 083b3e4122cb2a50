"""Objective evaluation: generated motion against the recorded motion of held-out utterances, beside the
baselines every perceptual study of this kind includes (random alignment: another utterance's motion; still:
no motion).

Every model is scored in two spaces:
- its own layout (the recorded clip retargeted to it): CCC, RMSE and the first canonical correlation per
  face region, the numbers of Sadoughi & Busso and Greenwood et al. (the canonical correlation over all
  held-out frames at once: one utterance has too few frames for the many channels);
- the shared landmark space (`landmarks:ibug68`, every clip retargeted there): per-region CCC, and the
  landmark errors D-P, D-V, D-PL, D-VL, D-AL, D-AE, lip vertex error and upper-face dynamics deviation,
  so models with different outputs meet on one scale;
plus, where a clip has head motion, head-rotation CCC/RMSE/CCA and the beat alignment of head motion with
audio onsets; and, for sampling models, the diversity across samples.

Other metrics are computed per utterance and averaged over utterances; the table counts them.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from . import metrics as M
from .motion import MotionClip, MotionError, fit_length, resample, retarget, still_like

SHARED_LAYOUT = "landmarks:ibug68"
REGIONS = ("upper", "middle", "lower")


@dataclass
class Reference:
    """One held-out utterance: its recorded clip, speaker and speech (for onsets)."""

    name: str
    clip: MotionClip
    speaker: str = ""
    audio: np.ndarray | None = None  # 16 kHz mono samples
    sample_rate: int = 16000


def random_alignment(target: Reference, pool: list[Reference], *, seed: int) -> MotionClip:
    """Recorded motion of another utterance (same speaker where possible), cut or mirrored to length.
    The choice of utterance and start frame is seeded and recorded in the clip's metadata."""
    others = [r for r in pool if r.name != target.name]
    same = [r for r in others if r.speaker and r.speaker == target.speaker] or others
    if not same:
        raise MotionError("random alignment needs at least two utterances")
    rng = random.Random(f"{seed}:{target.name}")
    donor = rng.choice(sorted(same, key=lambda r: r.name))
    clip = donor.clip if abs(donor.clip.fps - target.clip.fps) < 1e-9 else resample(donor.clip, target.clip.fps)
    start = rng.randrange(clip.n_frames)
    out = fit_length(clip, target.clip.n_frames, start=start)
    return out.with_values(out.values, source="random_alignment", donor=donor.name, start_frame=start, seed=seed)


def _native_reference(pred: MotionClip, truth: MotionClip) -> tuple[MotionClip, MotionClip]:
    """Both clips in the layout the model speaks (PCA is compared in the landmark space it encodes)."""
    if pred.layout == "pca":
        pred = retarget(pred, pred.basis.source_layout)
    return pred, retarget(truth, pred.layout)


def _moving(values: np.ndarray) -> np.ndarray:
    """Channels that move (in float64: float32 gives identical values a spurious spread of ~1e-6)."""
    return values.astype(np.float64).std(axis=0) > 1e-5


def _region_scores(pred: MotionClip, truth: MotionClip, regions, pooled: dict, prefix: str) -> dict[str, dict[str, float]]:
    """CCC and RMSE per region for one utterance; the region's frames are also kept in `pooled` for the
    canonical correlation, which needs many more frames than channels (one utterance has too few)."""
    scores = {}
    for region in regions:
        try:
            idx = list(truth.region_indices(region))
        except MotionError:
            continue
        t = truth.values[:, idx]
        p = pred.values[:, idx]
        keep = _moving(t)
        if not keep.any():
            continue
        key = f"{prefix}:{region}"
        scores[key] = {"ccc": float(np.mean(M.ccc(p[:, keep], t[:, keep]))),
                       "rmse": float(np.sqrt(np.mean((p - t) ** 2)))}
        pooled.setdefault(key, []).append((p, t))
    return scores


def _head_scores(pred: MotionClip, ref: Reference, pooled: dict) -> dict[str, float]:
    if pred.head_pose is None or ref.clip.head_pose is None:
        return {}
    p, t = pred.head_pose[:, :3], ref.clip.head_pose[:, :3]
    scores = {"ccc": float(np.mean(M.ccc(p, t))), "rmse": float(np.sqrt(np.mean((p - t) ** 2)))}
    pooled.setdefault("head", []).append((p, t))
    if ref.audio is not None and len(ref.audio):
        onsets = M.audio_onsets(ref.audio, ref.sample_rate)
        if len(onsets) and _moving(p).any():
            scores["beat_alignment"] = float(M.beat_alignment(p, onsets, pred.fps))
    return scores


def _landmark_scores(pred: MotionClip, truth: MotionClip) -> dict[str, float]:
    p, t = pred.landmarks(), truth.landmarks()
    scores = dict(M.landmark_errors(p, t, fps=pred.fps))
    scores["LVE"] = float(M.lip_vertex_error(p, t))
    scores["FDD"] = float(M.upper_face_dynamics_deviation(p, t))
    return scores


def score_clip(pred: MotionClip, ref: Reference, pooled: dict | None = None) -> dict[str, dict[str, float]]:
    """Every per-utterance metric of one generated clip against one recorded clip: {region: {metric: value}}.
    `pooled` collects each region's frames for the corpus-level canonical correlation."""
    pooled = {} if pooled is None else pooled
    truth = ref.clip
    if pred.n_frames != truth.n_frames:
        raise MotionError(f"{ref.name}: generated {pred.n_frames} frames, recorded {truth.n_frames}")
    native_pred, native_truth = _native_reference(pred, truth)
    out: dict[str, dict[str, float]] = {}
    if native_pred.layout != SHARED_LAYOUT:
        out.update(_region_scores(native_pred, native_truth, REGIONS, pooled, native_pred.layout))
    shared_pred = retarget(native_pred, SHARED_LAYOUT)
    shared_truth = retarget(truth, SHARED_LAYOUT)
    out.update(_region_scores(shared_pred, shared_truth, REGIONS, pooled, "landmarks"))
    out["landmarks:all"] = _landmark_scores(shared_pred, shared_truth)
    head = _head_scores(pred, ref, pooled)
    if head:
        out["head"] = head
    return out


def evaluate(generated: dict[str, dict[str, MotionClip]], references: list[Reference], *, seed: int = 0,
             samples: dict[str, dict[str, list[MotionClip]]] | None = None, baselines: bool = True) -> M.MetricsTable:
    """Score each model's clips ({model: {utterance: clip}}) against `references`, with the random-alignment
    and still baselines; `samples` ({model: {utterance: [clips]}}) adds the diversity of sampling models."""
    by_name = {r.name: r for r in references}
    runs = dict(generated)
    if baselines:
        runs["random_alignment"] = {r.name: random_alignment(r, references, seed=seed) for r in references}
        # One neutral face for every utterance (the mean of all recorded frames): a still face must not
        # know each utterance's own average.
        neutral = np.concatenate([r.clip.values for r in references]).mean(axis=0)
        runs["still"] = {r.name: still_like(r.clip, neutral=neutral) for r in references}
    table = M.MetricsTable()
    for model, clips in runs.items():
        per_key: dict[tuple[str, str], list[float]] = {}
        pooled: dict[str, list] = {}
        for name, clip in clips.items():
            if name not in by_name:
                raise MotionError(f"{model}: no recorded clip for utterance {name!r}")
            for region, values in score_clip(clip, by_name[name], pooled).items():
                for metric, value in values.items():
                    if np.isfinite(value):
                        per_key.setdefault((region, metric), []).append(value)
        grouped: dict[str, dict[str, float]] = {}
        counts: dict[str, int] = {}
        for (region, metric), values in per_key.items():
            grouped.setdefault(region, {})[metric] = float(np.mean(values))
            counts[region] = max(counts.get(region, 0), len(values))
        for region, pairs in pooled.items():  # canonical correlation over all held-out frames at once
            p = np.concatenate([a for a, _ in pairs])
            t = np.concatenate([b for _, b in pairs])
            if _moving(p).any() and _moving(t).any():
                grouped.setdefault(region, {})["cca"] = float(M.cca_first(p, t))
        if samples and model in samples:
            div = [M.diversity(np.stack([s.values for s in group])) for group in samples[model].values() if len(group) > 1]
            if div:
                grouped.setdefault("all", {})["diversity"] = float(np.mean(div))
                counts["all"] = len(div)
        for region in sorted(grouped):
            table.add_metrics(model=model, region=region, metrics=grouped[region], n_utterances=counts[region])
    return table
