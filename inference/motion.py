"""The motion clip: the one format that crosses between rooms (see DESIGN.md, "The motion clip").

A clip is a frame rate, a named channel layout (inference/layouts.py), values [T, C] float32, an optional
head pose [T, 6] (rx, ry, rz in degrees: pitch/nod, yaw/turn, roll/tilt; tx, ty, tz in millimetres) and
metadata (source, seed, model, units). It is saved as one `.npz` with its metadata inside and validated on
every load. Frame i covers the time [i/fps, (i+1)/fps).

Also here: frame-rate resampling, smoothing, cutting or looping to a length, region selection, retargeting
between layouts (`openface_au → arkit52`, `arkit52 ↔ landmarks:ibug68` through the linear face model of
inference/face_geometry.py) and PCA fitting.
"""
from __future__ import annotations

import io
import json
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .layouts import ARKIT52, HEAD_POSE_CHANNELS, OPENFACE_AUS, REGIONS, Layout, layout

FORMAT_VERSION = 1


class MotionError(ValueError):
    """A clip is malformed or does not fit what it is used with; the message says what and how to fix it."""


# Every entry of a clip's .npz carries this date, not the time of writing (zip's earliest date, 1980-01-01).
NPZ_DATE_TIME = (1980, 1, 1, 0, 0, 0)


def _write_npz(out, arrays: dict[str, np.ndarray]) -> None:
    """What `np.savez_compressed` writes (one deflated `NAME.npy` per array, read back by `np.load`), but
    byte for byte the same for the same arrays: entries in name order, each with a fixed date, permissions
    and creator system, where numpy stamps the time of writing and the writing machine's system."""
    with zipfile.ZipFile(out, mode="w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            data = io.BytesIO()
            np.lib.format.write_array(data, np.asanyarray(arrays[name]), allow_pickle=False)
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=NPZ_DATE_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.create_system = 3            # Unix, whichever system writes it
            entry.external_attr = 0o644 << 16  # -rw-r--r--
            archive.writestr(entry, data.getvalue())


@dataclass(frozen=True)
class PCABasis:
    """k components fitted on clips of `source_layout`; maps component scores back to that layout."""

    source_layout: str
    source_channels: tuple[str, ...]
    mean: np.ndarray          # [C]
    components: np.ndarray    # [k, C], orthonormal rows
    explained_variance_ratio: np.ndarray  # [k]

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    def project(self, values: np.ndarray) -> np.ndarray:
        return ((values - self.mean) @ self.components.T).astype(np.float32)

    def reconstruct(self, scores: np.ndarray) -> np.ndarray:
        return (scores @ self.components + self.mean).astype(np.float32)


@dataclass(frozen=True)
class MotionClip:
    fps: float
    layout: str
    values: np.ndarray                  # [T, C] float32
    channels: tuple[str, ...] = ()      # filled from the layout when empty
    head_pose: np.ndarray | None = None  # [T, 6] float32
    metadata: dict = field(default_factory=dict)
    basis: PCABasis | None = None       # for layout "pca"

    def __post_init__(self):
        values = np.asarray(self.values, dtype=np.float32)
        if values.ndim == 1:
            values = values[:, None]
        object.__setattr__(self, "values", values)
        if self.head_pose is not None:
            object.__setattr__(self, "head_pose", np.asarray(self.head_pose, dtype=np.float32))
        channels = tuple(str(c) for c in self.channels)
        if not channels and self.layout == "pca":
            channels = tuple(f"pc{i + 1}" for i in range(values.shape[1]))
        elif not channels:
            try:
                channels = layout(self.layout).channels
            except ValueError as exc:
                raise MotionError(str(exc)) from None
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "fps", float(self.fps))
        self.validate()

    # --- facts -----------------------------------------------------------------------------------------

    @property
    def n_frames(self) -> int:
        return int(self.values.shape[0])

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.fps

    @property
    def spec(self) -> Layout:
        return layout(self.layout, self.channels)

    def validate(self, *, audio_duration_s: float | None = None) -> "MotionClip":
        """Raise MotionError unless the clip is well formed (and, if given, as long as the audio ±1 frame)."""
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise MotionError(f"frame rate must be a positive number, got {self.fps!r}")
        try:
            spec = layout(self.layout, self.channels)
        except ValueError as exc:
            raise MotionError(str(exc)) from None
        if self.values.ndim != 2:
            raise MotionError(f"values must be [frames, channels], got shape {self.values.shape}")
        if spec.channels is not None and tuple(self.channels) != spec.channels:
            raise MotionError(
                f"layout {self.layout!r} has {len(spec.channels)} channels in a fixed order; this clip names "
                f"{len(self.channels)}: retarget or reorder the columns first"
            )
        if self.values.shape[1] != len(self.channels):
            raise MotionError(f"values have {self.values.shape[1]} columns but {len(self.channels)} channel names")
        _check_finite(self.values, "values")
        if self.head_pose is not None:
            if self.head_pose.shape != (self.n_frames, 6):
                raise MotionError(f"head pose must be [{self.n_frames}, 6] (rx ry rz deg, tx ty tz mm), "
                                  f"got {self.head_pose.shape}")
            _check_finite(self.head_pose, "head pose")
        if self.layout == "pca":
            if self.basis is None or self.basis.k != self.values.shape[1]:
                raise MotionError("a pca clip needs its basis, with one component per channel")
        if audio_duration_s is not None and abs(audio_duration_s - self.duration_s) > 1.0 / self.fps + 1e-6:
            raise MotionError(
                f"motion lasts {self.duration_s:.3f} s ({self.n_frames} frames at {self.fps:g} fps) but the audio "
                f"lasts {audio_duration_s:.3f} s; they must agree within one frame"
            )
        return self

    def region(self, name: str) -> np.ndarray:
        """Values of one region ([T, c]); 'head' is the head pose."""
        if name == "head":
            if self.head_pose is None:
                raise MotionError("this clip has no head pose")
            return self.head_pose
        idx = self.region_indices(name)
        return self.values[:, idx]

    def region_indices(self, name: str) -> tuple[int, ...]:
        regions = self.metadata.get("regions") or self.spec.regions
        if name not in regions:
            raise MotionError(f"layout {self.layout!r} declares no region {name!r}; it has {sorted(regions) or 'none'}")
        return tuple(regions[name])

    def regions(self) -> list[str]:
        names = [r for r in REGIONS if r in (self.metadata.get("regions") or self.spec.regions)]
        return names + (["head"] if self.head_pose is not None else [])

    def landmarks(self) -> np.ndarray:
        """[T, N, 3] points of a landmark clip."""
        if not self.layout.startswith("landmarks:"):
            raise MotionError(f"a {self.layout!r} clip has no landmarks; retarget it to landmarks:ibug68 first")
        return self.values.reshape(self.n_frames, -1, 3)

    def with_values(self, values: np.ndarray, head_pose: np.ndarray | None = ..., **metadata) -> "MotionClip":
        return replace(self, values=values, head_pose=self.head_pose if head_pose is ... else head_pose,
                       metadata={**self.metadata, **metadata})

    # --- files -----------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the clip as `.npz` atomically (temporary name in the same folder, then rename). The same clip
        always gives the same bytes (see `_write_npz`), so rebuilt corpora and generated clips hash alike."""
        path = Path(path)
        meta = {"format": "motion-clip", "version": FORMAT_VERSION, "fps": self.fps, "layout": self.layout,
                "metadata": self.metadata}
        arrays = {"values": self.values, "channels": np.array(self.channels, dtype=str),
                  "meta": np.array(json.dumps(meta, sort_keys=True))}
        if self.head_pose is not None:
            arrays["head_pose"] = self.head_pose
        if self.basis is not None:
            arrays.update(pca_mean=self.basis.mean, pca_components=self.basis.components,
                          pca_explained=self.basis.explained_variance_ratio,
                          pca_source=np.array([self.basis.source_layout, *self.basis.source_channels], dtype=str))
        buffer = io.BytesIO()
        _write_npz(buffer, arrays)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(buffer.getvalue())
            os.chmod(tmp, 0o644)  # mkstemp makes files private; clips are shared with web and render workers
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, audio_duration_s: float | None = None) -> "MotionClip":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("format") != "motion-clip":
                    raise MotionError(f"{path.name} is not a motion clip (.npz written by MotionClip.save)")
                if int(meta.get("version", 0)) > FORMAT_VERSION:
                    raise MotionError(f"{path.name} was written by a newer version of the platform")
                basis = None
                if "pca_components" in data:
                    source = [str(s) for s in data["pca_source"]]
                    basis = PCABasis(source[0], tuple(source[1:]), data["pca_mean"].astype(np.float32),
                                     data["pca_components"].astype(np.float32),
                                     data["pca_explained"].astype(np.float32))
                clip = cls(fps=meta["fps"], layout=meta["layout"], values=data["values"],
                           channels=tuple(str(c) for c in data["channels"]),
                           head_pose=data["head_pose"] if "head_pose" in data else None,
                           metadata=meta.get("metadata", {}), basis=basis)
        except MotionError as exc:
            raise MotionError(f"{path.name}: {exc}") from None
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
            raise MotionError(f"{path.name} could not be read as a motion clip ({type(exc).__name__}: {exc})") from None
        return clip.validate(audio_duration_s=audio_duration_s)


def _check_finite(array: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        frame, column = map(int, np.argwhere(bad)[0])
        raise MotionError(f"{what} hold {int(bad.sum())} NaN/inf values (first at frame {frame}, column {column})")


# --- time ----------------------------------------------------------------------------------------------


def frames_for_duration(duration_s: float, fps: float) -> int:
    return max(1, int(round(duration_s * fps)))


def resample(clip: MotionClip, fps: float, *, n_frames: int | None = None) -> MotionClip:
    """The clip at another frame rate (linear interpolation at frame centres; edges held).

    The new length is round(duration × fps) unless `n_frames` is given (e.g. to match the audio exactly).
    """
    if fps <= 0:
        raise MotionError(f"frame rate must be positive, got {fps}")
    n_new = n_frames if n_frames is not None else frames_for_duration(clip.duration_s, fps)
    if n_new == clip.n_frames and abs(fps - clip.fps) < 1e-9:
        return clip
    old_t = (np.arange(clip.n_frames) + 0.5) / clip.fps
    new_t = (np.arange(n_new) + 0.5) / fps

    def interp(a: np.ndarray) -> np.ndarray:
        return np.stack([np.interp(new_t, old_t, a[:, c]) for c in range(a.shape[1])], axis=1).astype(np.float32)

    head = interp(clip.head_pose) if clip.head_pose is not None else None
    return replace(clip, fps=fps, values=interp(clip.values), head_pose=head)


def smooth(clip: MotionClip, *, cutoff_hz: float = 8.0, order: int = 2) -> MotionClip:
    """Zero-phase Butterworth low-pass (no time shift); clips too short for the filter are returned as is."""
    from scipy.signal import butter, filtfilt

    nyquist = clip.fps / 2
    if cutoff_hz >= nyquist:
        return clip
    b, a = butter(order, cutoff_hz / nyquist)
    padlen = 3 * max(len(a), len(b))
    if clip.n_frames <= padlen:
        return clip

    def run(x):
        return filtfilt(b, a, x, axis=0).astype(np.float32)

    return replace(clip, values=run(clip.values),
                   head_pose=run(clip.head_pose) if clip.head_pose is not None else None)


def fit_length(clip: MotionClip, n_frames: int, *, start: int = 0, mode: str = "mirror") -> MotionClip:
    """Cut or extend the clip to `n_frames` beginning at frame `start`.

    `mirror` extends by playing the clip backwards and forwards again (no jump at the seam, GENEA's usual
    choice for mismatched motion); `loop` wraps around to the start.
    """
    if n_frames <= 0:
        raise MotionError(f"length must be at least one frame, got {n_frames}")
    if mode not in ("mirror", "loop"):
        raise MotionError(f"mode must be 'mirror' or 'loop', got {mode!r}")
    T = clip.n_frames
    positions = np.arange(start, start + n_frames)
    if mode == "loop" or T == 1:
        index = positions % T
    else:
        period = 2 * T - 2
        phase = positions % period
        index = np.where(phase < T, phase, period - phase)
    return replace(clip, values=clip.values[index],
                   head_pose=clip.head_pose[index] if clip.head_pose is not None else None)


def time_shift(clip: MotionClip, shift_ms: float) -> MotionClip:
    """Motion delayed (positive) or advanced (negative) by `shift_ms`, edges held; same length."""
    frames = int(round(shift_ms / 1000.0 * clip.fps))
    index = np.clip(np.arange(clip.n_frames) - frames, 0, clip.n_frames - 1)
    return replace(clip, values=clip.values[index],
                   head_pose=clip.head_pose[index] if clip.head_pose is not None else None,
                   metadata={**clip.metadata, "time_shift_ms": shift_ms})


def still_like(clip: MotionClip, *, neutral: np.ndarray | None = None) -> MotionClip:
    """Neutral face, still head, as long as `clip` (the `still` condition)."""
    base = np.zeros(clip.values.shape[1], np.float32) if neutral is None else np.asarray(neutral, np.float32)
    values = np.repeat(base[None, :], clip.n_frames, axis=0)
    head = np.zeros((clip.n_frames, 6), np.float32) if clip.head_pose is not None else None
    return replace(clip, values=values, head_pose=head, metadata={**clip.metadata, "source": "still"})


# --- retargeting ---------------------------------------------------------------------------------------

# OpenFace AU intensity (0..5) → ARKit blendshape weight (0..1). Each AU drives the blendshapes that
# describe the same muscle action (FACS ↔ ARKit correspondences as documented by Apple and by the
# FACS manual); bilateral AUs drive both sides. Weights are divided by 5 and the result clipped to 0..1.
OPENFACE_TO_ARKIT = {
    "AU01": {"browInnerUp": 1.0},                                        # inner brow raiser
    "AU02": {"browOuterUpLeft": 1.0, "browOuterUpRight": 1.0},           # outer brow raiser
    "AU04": {"browDownLeft": 1.0, "browDownRight": 1.0},                 # brow lowerer
    "AU05": {"eyeWideLeft": 1.0, "eyeWideRight": 1.0},                   # upper lid raiser
    "AU06": {"cheekSquintLeft": 1.0, "cheekSquintRight": 1.0},           # cheek raiser
    "AU07": {"eyeSquintLeft": 1.0, "eyeSquintRight": 1.0},               # lid tightener
    "AU09": {"noseSneerLeft": 1.0, "noseSneerRight": 1.0},               # nose wrinkler
    "AU10": {"mouthUpperUpLeft": 1.0, "mouthUpperUpRight": 1.0},         # upper lip raiser
    "AU12": {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0},             # lip corner puller
    "AU14": {"mouthDimpleLeft": 1.0, "mouthDimpleRight": 1.0},           # dimpler
    "AU15": {"mouthFrownLeft": 1.0, "mouthFrownRight": 1.0},             # lip corner depressor
    "AU17": {"mouthShrugLower": 1.0},                                    # chin raiser
    "AU20": {"mouthStretchLeft": 1.0, "mouthStretchRight": 1.0},         # lip stretcher
    "AU23": {"mouthPressLeft": 1.0, "mouthPressRight": 1.0},             # lip tightener
    "AU25": {"mouthLowerDownLeft": 0.5, "mouthLowerDownRight": 0.5},     # lips part
    "AU26": {"jawOpen": 1.0},                                            # jaw drop
    "AU45": {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0},                 # blink
}


def _openface_matrix() -> np.ndarray:
    matrix = np.zeros((len(OPENFACE_AUS), len(ARKIT52)), np.float32)
    for au, targets in OPENFACE_TO_ARKIT.items():
        for shape, weight in targets.items():
            matrix[OPENFACE_AUS.index(au), ARKIT52.index(shape)] = weight / 5.0
    return matrix


def _openface_to_arkit(clip: MotionClip) -> MotionClip:
    values = np.clip(clip.values @ _openface_matrix(), 0.0, 1.0)
    return replace(clip, layout="arkit52", channels=ARKIT52, values=values,
                   metadata={**clip.metadata, "retargeted_from": "openface_au"})


def _arkit_to_ibug68(clip: MotionClip) -> MotionClip:
    from .face_geometry import arkit_to_ibug68

    points = arkit_to_ibug68(clip.values)  # [T, 68, 3]
    return replace(clip, layout="landmarks:ibug68", channels=(), values=points.reshape(clip.n_frames, -1),
                   metadata={**clip.metadata, "retargeted_from": "arkit52"})


def _ibug68_to_arkit(clip: MotionClip) -> MotionClip:
    from .face_geometry import ibug68_to_arkit

    values = ibug68_to_arkit(clip.landmarks())
    return replace(clip, layout="arkit52", channels=(), values=values,
                   metadata={**clip.metadata, "retargeted_from": "landmarks:ibug68"})


_RETARGETS = {
    ("openface_au", "arkit52"): _openface_to_arkit,
    ("arkit52", "landmarks:ibug68"): _arkit_to_ibug68,
    ("landmarks:ibug68", "arkit52"): _ibug68_to_arkit,
}


def retarget(clip: MotionClip, target: str) -> MotionClip:
    """The clip in layout `target`, through the documented mappings (chained where needed); head pose kept."""
    if clip.layout == target:
        return clip
    if clip.layout == "pca" and clip.basis is not None:
        return retarget(from_pca(clip), target)
    if (clip.layout, target) in _RETARGETS:
        return _RETARGETS[(clip.layout, target)](clip)
    for (src, mid), step in _RETARGETS.items():
        if src == clip.layout and (mid, target) in _RETARGETS:
            return _RETARGETS[(mid, target)](step(clip))
    known = ", ".join(f"{a} → {b}" for a, b in _RETARGETS)
    raise MotionError(f"no retargeting from {clip.layout!r} to {target!r}; known mappings: {known}")


# --- PCA -----------------------------------------------------------------------------------------------


def fit_pca(clips: list[MotionClip], *, k: int | None = None, variance: float = 0.95) -> PCABasis:
    """Fit a PCA basis on all frames of `clips` (one layout): `k` components, or as many as retain
    `variance` of the total variance."""
    if not clips:
        raise MotionError("fit_pca needs at least one clip")
    layouts = {c.layout for c in clips}
    if len(layouts) != 1:
        raise MotionError(f"fit_pca needs clips of one layout, got {sorted(layouts)}")
    frames = np.concatenate([c.values for c in clips]).astype(np.float64)
    mean = frames.mean(axis=0)
    _, singular, vt = np.linalg.svd(frames - mean, full_matrices=False)
    var = singular ** 2
    ratio = var / var.sum() if var.sum() > 0 else np.zeros_like(var)
    if k is None:
        if not 0 < variance <= 1:
            raise MotionError(f"variance must be in (0, 1], got {variance}")
        k = int(np.searchsorted(np.cumsum(ratio), variance - 1e-12) + 1)
    if not 1 <= k <= vt.shape[0]:
        raise MotionError(f"k must be between 1 and {vt.shape[0]}, got {k}")
    components = vt[:k]
    # A deterministic sign per component (largest-magnitude loading positive) so refits agree.
    signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
    components = components * signs[:, None]
    return PCABasis(clips[0].layout, clips[0].channels, mean.astype(np.float32), components.astype(np.float32),
                    ratio[:k].astype(np.float32))


def to_pca(clip: MotionClip, basis: PCABasis) -> MotionClip:
    if clip.layout != basis.source_layout:
        clip = retarget(clip, basis.source_layout)
    return replace(clip, layout="pca", channels=tuple(f"pc{i + 1}" for i in range(basis.k)),
                   values=basis.project(clip.values), basis=basis)


def from_pca(clip: MotionClip) -> MotionClip:
    if clip.layout != "pca" or clip.basis is None:
        raise MotionError("from_pca needs a pca clip with its basis")
    basis = clip.basis
    return replace(clip, layout=basis.source_layout, channels=basis.source_channels,
                   values=basis.reconstruct(clip.values), basis=None)


__all__ = ["MotionClip", "MotionError", "PCABasis", "HEAD_POSE_CHANNELS", "resample", "smooth", "fit_length",
           "time_shift", "still_like", "retarget", "fit_pca", "to_pca", "from_pca", "frames_for_duration"]
