"""Objective metrics that compare generated facial and head motion with recorded motion.

The numbers `evaluate_models` puts beside the listening-test results: pure numpy/scipy functions over
arrays, so they serve clips from this platform and arrays from anywhere else. A motion array is
`[T, C]` (frames × channels); landmarks are `[T, N, 3]` or `[T, N, 2]`; a region is a name → list of
channel (or landmark) indices. Every function checks shapes and finiteness and raises `MetricInputError`
(a `ValueError`) saying which argument is wrong and how.

Where each metric is defined:

- `ccc` — Lin's concordance correlation coefficient: L. I-K. Lin, "A concordance correlation coefficient
  to evaluate reproducibility", Biometrics 45(1), 1989. Also the loss (1 − CCC) of the separate-region and
  joint multitask BLSTMs this project starts from. `mse`, `rmse`: per channel.
- `cca_first` — the first canonical correlation (H. Hotelling, "Relations between two sets of variates",
  Biometrika 28, 1936) between generated and recorded motion, as used to score speech-driven head motion
  (the forked face→head BLSTM study) and in GENEA-style objective evaluations.
- `mean_landmark_distance`, `mean_velocity_distance`, `mean_area_error`, `landmark_errors` — the
  audio-to-landmark errors D-P, D-V, D-PL, D-VL, D-AL and D-AE, after MakeItTalk's D-L, D-V and D-A
  (Zhou et al., "MakeItTalk: Speaker-Aware Talking-Head Animation", SIGGRAPH Asia 2020); `polygon_area`
  is the shoelace formula.
- `lip_vertex_error` — LVE: per frame the largest lip-point error, averaged over frames (Richard et al.,
  "MeshTalk", ICCV 2021; Fan et al., "FaceFormer", CVPR 2022).
- `upper_face_dynamics_deviation` — FDD (Xing et al., "CodeTalker", CVPR 2023).
- `beat_alignment` — the beat-align score of Bailando (Li et al., CVPR 2022), applied to head motion and
  speech onsets; `audio_onsets` uses librosa's onset detector.
- `diversity` — mean pairwise distance between samples drawn for one input (for the Glow model).

`MetricsTable` collects the results (model × region × metric) and writes CSV and Markdown.
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks

from .layouts import IBUG68_INNER_LIP, IBUG68_LEFT_EYE, IBUG68_LIPS, IBUG68_LIPS_AND_JAW, IBUG68_RIGHT_EYE, \
    IBUG68_UPPER_FACE


class MetricInputError(ValueError):
    """An array given to a metric has the wrong shape, holds NaN or infinity, or an argument is out of range."""


# --- input checks -------------------------------------------------------------------------------------

def _finite_array(a, name: str, ndims: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(f"{name} must be an array of numbers: {exc}") from None
    if arr.ndim not in ndims:
        wanted = " or ".join(f"{d}-D" for d in ndims)
        raise MetricInputError(f"{name} must be {wanted}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise MetricInputError(f"{name} holds {bad} NaN or infinite value(s); fill or drop those frames first")
    return arr


def _same_shape(x: np.ndarray, y: np.ndarray, names: str) -> None:
    if x.shape != y.shape:
        raise MetricInputError(f"{names} must have the same shape, got {x.shape} and {y.shape}; "
                               "cut both to the same frames and channels")


def _axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise MetricInputError(f"axis {axis} is out of range for a {ndim}-D array")
    return axis % ndim


def _pair(x, y, axis: int) -> tuple[np.ndarray, np.ndarray, int]:
    x = _finite_array(x, "x", (1, 2, 3))
    y = _finite_array(y, "y", (1, 2, 3))
    _same_shape(x, y, "x and y")
    axis = _axis(axis, x.ndim)
    if x.shape[axis] < 1:
        raise MetricInputError("x and y have no frames")
    return x, y, axis


def _scalar_or_array(values: np.ndarray):
    return float(values) if values.ndim == 0 else values


def _landmark_pair(pred, true, min_frames: int = 1) -> tuple[np.ndarray, np.ndarray]:
    pred = _finite_array(pred, "pred", (3,))
    true = _finite_array(true, "true", (3,))
    _same_shape(pred, true, "pred and true landmarks")
    if pred.shape[2] not in (2, 3):
        raise MetricInputError(f"landmarks must be [T, N, 2] or [T, N, 3], got shape {pred.shape}")
    if pred.shape[0] < min_frames:
        raise MetricInputError(f"landmarks need at least {min_frames} frame(s), got {pred.shape[0]}")
    return pred, true


def _indices(idx, n: int, name: str = "idx") -> np.ndarray:
    arr = np.asarray(idx)
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise MetricInputError(f"{name} must be a non-empty list of integer indices, got {idx!r}")
    out_of_range = arr[(arr < 0) | (arr >= n)]
    if out_of_range.size:
        raise MetricInputError(f"{name} has index {int(out_of_range[0])}, out of range for {n} points/channels; "
                               "pass the indices of your scheme")
    return arr


def _positive(value: float, name: str) -> float:
    if not (isinstance(value, (int, float, np.number)) and math.isfinite(value) and value > 0):
        raise MetricInputError(f"{name} must be a positive number, got {value!r}")
    return float(value)


# --- per-channel agreement ----------------------------------------------------------------------------

def ccc(x, y, axis: int = 0):
    """Lin's concordance correlation coefficient of `x` and `y` along `axis`, per channel.

    CCC = 2·cov(x, y) / (var(x) + var(y) + (mean(x) − mean(y))²), with population (1/T) variances and
    covariance. Unlike Pearson's r it falls with any offset or scale difference, so 1 means identical.
    Defined where the formula is 0/0: when both series are constant the CCC is 1 if they are equal and 0
    if not; when only one is constant it is 0. Returns a float for 1-D input, else an array without `axis`.
    """
    x, y, axis = _pair(x, y, axis)
    const_x = np.ptp(x, axis=axis, keepdims=True) == 0
    const_y = np.ptp(y, axis=axis, keepdims=True) == 0
    mean_x, mean_y = x.mean(axis=axis, keepdims=True), y.mean(axis=axis, keepdims=True)
    # A constant series is centred exactly, so rounding in its mean cannot fake a covariance.
    xc = np.where(const_x, 0.0, x - mean_x)
    yc = np.where(const_y, 0.0, y - mean_y)
    cov = (xc * yc).mean(axis=axis)
    denominator = (xc ** 2).mean(axis=axis) + (yc ** 2).mean(axis=axis) + ((mean_x - mean_y) ** 2).squeeze(axis)
    both_constant = (const_x & const_y).squeeze(axis)
    equal = (np.take(x, [0], axis=axis) == np.take(y, [0], axis=axis)).squeeze(axis)
    safe = np.where(both_constant, 1.0, denominator)
    values = np.where(both_constant, np.where(equal, 1.0, 0.0), 2.0 * cov / safe)
    return _scalar_or_array(values)


def mse(x, y, axis: int = 0):
    """Mean squared error along `axis`, per channel (a float for 1-D input)."""
    x, y, axis = _pair(x, y, axis)
    return _scalar_or_array(((x - y) ** 2).mean(axis=axis))


def rmse(x, y, axis: int = 0):
    """Root mean squared error along `axis`, per channel (a float for 1-D input)."""
    return _scalar_or_array(np.sqrt(mse(x, y, axis)))


def per_region(values_per_channel, regions: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """Average a per-channel metric within each region: {region: mean over its channels}."""
    values = _finite_array(values_per_channel, "values_per_channel", (1,))
    if not regions:
        raise MetricInputError("regions is empty; give at least one region name → channel indices")
    return {name: float(values[_indices(idx, values.size, f"region {name!r}")].mean())
            for name, idx in regions.items()}


# --- canonical correlation ----------------------------------------------------------------------------

def _as_series(a, name: str) -> np.ndarray:
    arr = _finite_array(a, name, (1, 2))
    return arr[:, None] if arr.ndim == 1 else arr


def _whitened(series: np.ndarray, reg: float) -> np.ndarray | None:
    """Centre, scale each channel to unit variance, and whiten with a ridge on the correlation matrix.

    Constant channels carry nothing to correlate and are dropped; None when every channel is constant.
    """
    series = series[:, np.ptp(series, axis=0) > 0]
    if series.shape[1] == 0:
        return None
    series = series - series.mean(axis=0)
    series = series / series.std(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(series.T @ series / len(series))
    return series @ (eigenvectors / np.sqrt(np.clip(eigenvalues, 0.0, None) + reg))


def cca_first(x, y, reg: float = 1e-6) -> float:
    """First canonical correlation between two multivariate series `x` [T, Cx] and `y` [T, Cy].

    The largest Pearson correlation between any linear combination of x's channels and any of y's, found
    by whitening each side and taking the top singular value of their cross-covariance. Each channel is
    scaled to unit variance first, so `reg` is a ridge on the correlation matrices: rescaling a channel
    changes nothing, and any other invertible linear map of either side changes the result only where
    channels are nearly collinear (by about `reg` × the map's squared condition number). 1-D inputs are
    one channel; for one channel each it equals |Pearson r|. A side that never moves correlates with
    nothing: 0.
    """
    x, y = _as_series(x, "x"), _as_series(y, "y")
    if len(x) != len(y):
        raise MetricInputError(f"x and y must have the same number of frames, got {len(x)} and {len(y)}")
    if len(x) < 2:
        raise MetricInputError("cca_first needs at least 2 frames")
    reg = _positive(reg, "reg")
    wx, wy = _whitened(x, reg), _whitened(y, reg)
    if wx is None or wy is None:
        return 0.0
    top = np.linalg.svd(wx.T @ wy / len(x), compute_uv=False)[0]
    return float(min(top, 1.0))


# --- landmark errors ----------------------------------------------------------------------------------

def polygon_area(points) -> np.ndarray | float:
    """Area of the polygon(s) with vertices `points` [..., K, 2] in order, by the shoelace formula.

    Works batched (returns shape [...]); the absolute value, so clockwise and counter-clockwise agree.
    Pass `landmarks[..., idx, :2]` to measure in the x–y plane.
    """
    pts = _finite_array(points, "points", tuple(range(2, 8)))
    if pts.shape[-1] != 2 or pts.shape[-2] < 3:
        raise MetricInputError(f"points must be [..., K, 2] with K ≥ 3 vertices, got shape {pts.shape}; "
                               "slice [..., :2] for 3-D landmarks")
    x, y = pts[..., 0], pts[..., 1]
    twice_signed = (x * np.roll(y, -1, axis=-1) - np.roll(x, -1, axis=-1) * y).sum(axis=-1)
    return _scalar_or_array(np.abs(twice_signed) / 2.0)


def mean_landmark_distance(pred, true, idx: Sequence[int] | None = None) -> float:
    """Mean Euclidean distance between predicted and true landmarks over frames and landmarks (D-P; D-PL
    with `idx` = lips and jaw). Distances use every coordinate given (x, y and z for [T, N, 3])."""
    pred, true = _landmark_pair(pred, true)
    if idx is not None:
        keep = _indices(idx, pred.shape[1])
        pred, true = pred[:, keep], true[:, keep]
    return float(np.linalg.norm(pred - true, axis=-1).mean())


def mean_velocity_distance(pred, true, idx: Sequence[int] | None = None, fps: float | None = None) -> float:
    """Mean Euclidean distance between predicted and true landmark velocities (D-V; D-VL with `idx`).

    Velocity is the first difference between consecutive frames: in units per frame by default, in units
    per second when `fps` is given (differences × fps). Needs at least 2 frames.
    """
    pred, true = _landmark_pair(pred, true, min_frames=2)
    scale = 1.0 if fps is None else _positive(fps, "fps")
    return mean_landmark_distance(np.diff(pred, axis=0) * scale, np.diff(true, axis=0) * scale, idx)


def mean_area_error(pred, true, polygons: Sequence[Sequence[int]]) -> float:
    """Mean absolute error of polygon areas in the x–y plane: per polygon, |area(pred) − area(true)|
    averaged over frames; then averaged over the polygons (D-AL: the inner lip; D-AE: both eyes)."""
    pred, true = _landmark_pair(pred, true)
    if not polygons:
        raise MetricInputError("polygons is empty; give at least one list of landmark indices")
    errors = []
    for number, polygon in enumerate(polygons):
        keep = _indices(polygon, pred.shape[1], f"polygons[{number}]")
        errors.append(np.abs(polygon_area(pred[:, keep, :2]) - polygon_area(true[:, keep, :2])).mean())
    return float(np.mean(errors))


def landmark_errors(pred, true, *, fps: float | None = None,
                    lips_and_jaw: Sequence[int] = IBUG68_LIPS_AND_JAW,
                    mouth: Sequence[int] = IBUG68_INNER_LIP,
                    eyes: Sequence[Sequence[int]] = (IBUG68_RIGHT_EYE, IBUG68_LEFT_EYE)) -> dict[str, float]:
    """The audio-to-landmark errors for one utterance (lower is better), iBUG 68-point indices by default.

    D-P: mean landmark distance; D-V: mean velocity distance (per frame, or per second with `fps`);
    D-PL, D-VL: the same over lips and jaw; D-AL: mean absolute error of the mouth-opening (inner-lip)
    area; D-AE: mean absolute error of the eye-opening areas, averaged over the eyes.
    """
    return {
        "D-P": mean_landmark_distance(pred, true),
        "D-V": mean_velocity_distance(pred, true, fps=fps),
        "D-PL": mean_landmark_distance(pred, true, lips_and_jaw),
        "D-VL": mean_velocity_distance(pred, true, lips_and_jaw, fps=fps),
        "D-AL": mean_area_error(pred, true, [mouth]),
        "D-AE": mean_area_error(pred, true, eyes),
    }


def lip_vertex_error(pred, true, idx: Sequence[int] = IBUG68_LIPS, *, squared: bool = False) -> float:
    """LVE: for each frame the largest Euclidean error over the lip points `idx`, averaged over frames.

    FaceFormer's released script takes the squared distance; `squared=True` reproduces that.
    """
    pred, true = _landmark_pair(pred, true)
    keep = _indices(idx, pred.shape[1])
    distance = np.linalg.norm(pred[:, keep] - true[:, keep], axis=-1)
    return float((distance ** 2 if squared else distance).max(axis=1).mean())


def _motion_spread(points: np.ndarray, reference: str, squared: bool) -> float:
    ref = points.mean(axis=0) if reference == "mean" else points[0]
    displacement = np.linalg.norm(points - ref, axis=-1)  # [T, n]
    if squared:
        displacement = displacement ** 2
    return float(displacement.std(axis=0).mean())


def upper_face_dynamics_deviation(pred, true, idx: Sequence[int] = IBUG68_UPPER_FACE, *,
                                  reference: str = "mean", squared: bool = False) -> float:
    """FDD: how much more (or less) the upper face moves in `pred` than in `true`.

    For each landmark in `idx`, the displacement norm from the sequence's own reference frame (its mean
    frame, or its first with reference="first"), then its standard deviation over time (population);
    averaged over the landmarks. Returned as pred − true: negative when the prediction is stiller than the
    recording, positive when it moves more, 0 for the same dynamics. (CodeTalker reports true − pred of
    squared norms from a neutral template; `squared=True` gives the squared variant.)
    """
    if reference not in ("mean", "first"):
        raise MetricInputError(f"reference must be 'mean' or 'first', got {reference!r}")
    pred, true = _landmark_pair(pred, true)
    keep = _indices(idx, pred.shape[1])
    return _motion_spread(pred[:, keep], reference, squared) - _motion_spread(true[:, keep], reference, squared)


# --- timing and variety -------------------------------------------------------------------------------

def kinematic_beats(motion, fps: float, smooth_frames: float = 1.0) -> np.ndarray:
    """Times (s) of the local minima of speed in `motion` [T, k] (frame t at t / fps).

    Speed is the norm of the central-difference velocity, lightly smoothed by a Gaussian of
    `smooth_frames` frames (0 for none). A stretch of equal minima counts once, at its middle.
    """
    series = _as_series(motion, "motion")
    fps = _positive(fps, "fps")
    if len(series) < 3:
        raise MetricInputError(f"motion needs at least 3 frames to have beats, got {len(series)}")
    if not (math.isfinite(smooth_frames) and smooth_frames >= 0):
        raise MetricInputError(f"smooth_frames must be 0 or more, got {smooth_frames!r}")
    speed = np.linalg.norm(np.gradient(series, axis=0), axis=1) * fps
    if smooth_frames > 0:
        speed = gaussian_filter1d(speed, smooth_frames)
    minima, _ = find_peaks(-speed)
    return minima / fps


def beat_alignment(head_motion, audio_onsets_s, fps: float, sigma: float = 0.1,
                   smooth_frames: float = 1.0) -> float:
    """Beat-align score of head motion to speech: mean over motion beats of exp(−d² / (2σ²)).

    Motion beats are `kinematic_beats` of `head_motion` [T, k]; d is each beat's distance (s) to the
    nearest audio onset; `sigma` in seconds. This is Bailando's formula (averaged over motion beats, as in
    its paper). 1 when every beat sits on an onset. Motion with no beats (a still head) scores 0, and so
    does audio with no onsets.
    """
    sigma = _positive(sigma, "sigma")
    beats = kinematic_beats(head_motion, fps, smooth_frames)
    onsets = _finite_array(audio_onsets_s, "audio_onsets_s", (1,))
    if beats.size == 0 or onsets.size == 0:
        return 0.0
    nearest = np.abs(beats[:, None] - onsets[None, :]).min(axis=1)
    return float(np.exp(-nearest ** 2 / (2 * sigma ** 2)).mean())


def audio_onsets(samples, sr: int) -> np.ndarray:
    """Onset times (s) in mono audio `samples` [n] at `sr` Hz, by librosa's spectral-flux onset detector."""
    import librosa  # slow to import (numba); only this function needs it

    y = _finite_array(samples, "samples", (1,)).astype(np.float32)
    sr = _positive(sr, "sr")
    return np.asarray(librosa.onset.onset_detect(y=y, sr=int(sr), units="time"), dtype=np.float64)


def diversity(samples) -> float:
    """Mean pairwise Euclidean distance between S samples [S, T, C] drawn for one input.

    For each pair the distance between their frames, averaged over frames; then averaged over all pairs.
    0 when every sample is the same.
    """
    arr = _finite_array(samples, "samples", (3,))
    if arr.shape[0] < 2:
        raise MetricInputError(f"diversity needs at least 2 samples, got {arr.shape[0]}")
    per_pair = [np.linalg.norm(arr[i] - arr[i + 1:], axis=-1).mean(axis=-1) for i in range(len(arr) - 1)]
    return float(np.concatenate(per_pair).mean())


# --- results table ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MetricRow:
    model: str
    region: str
    metric: str
    value: float
    n_utterances: int


class MetricsTable:
    """Metric values by model, region and metric, each with the number of utterances it averages.

    `to_csv` writes one row per value (columns `COLUMNS`) and `from_csv` reads it back exactly;
    `to_markdown` lays it out as model × region rows with the metrics as columns.
    """

    COLUMNS = ("model", "region", "metric", "value", "n_utterances")

    def __init__(self, rows: Sequence[MetricRow] = ()):
        self._rows: dict[tuple[str, str, str], MetricRow] = {}
        for row in rows:
            self.add(**vars(row))

    @property
    def rows(self) -> list[MetricRow]:
        return list(self._rows.values())

    def add(self, *, model: str, region: str, metric: str, value: float, n_utterances: int) -> None:
        for name, text in (("model", model), ("region", region), ("metric", metric)):
            if not isinstance(text, str) or not text.strip():
                raise MetricInputError(f"{name} must be a non-empty string, got {text!r}")
        if not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
            raise MetricInputError(f"value of {model}/{region}/{metric} must be a finite number, got {value!r}")
        if isinstance(n_utterances, bool) or not isinstance(n_utterances, (int, np.integer)) or n_utterances < 1:
            raise MetricInputError(f"n_utterances must be a positive integer, got {n_utterances!r}")
        key = (model, region, metric)
        if key in self._rows:
            raise MetricInputError(f"{model}/{region}/{metric} is already in the table; average first, add once")
        self._rows[key] = MetricRow(model, region, metric, float(value), int(n_utterances))

    def add_metrics(self, *, model: str, region: str, metrics: Mapping[str, float], n_utterances: int) -> None:
        """Add several metrics of one model and region, e.g. the dict `landmark_errors` returns."""
        for metric, value in metrics.items():
            self.add(model=model, region=region, metric=metric, value=value, n_utterances=n_utterances)

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write the table (atomically: a temporary file renamed into place)."""
        path = Path(path)
        temporary = path.with_name(f".{path.name}.tmp")
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(self.COLUMNS)
            for row in self._rows.values():
                writer.writerow([row.model, row.region, row.metric, repr(row.value), row.n_utterances])
        os.replace(temporary, path)

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> MetricsTable:
        table = cls()
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if tuple(header or ()) != cls.COLUMNS:
                raise MetricInputError(f"{path}: the first line must be {','.join(cls.COLUMNS)}, got {header}")
            for line, fields in enumerate(reader, start=2):
                try:
                    model, region, metric, value, n = fields
                    table.add(model=model, region=region, metric=metric, value=float(value), n_utterances=int(n))
                except ValueError as exc:
                    raise MetricInputError(f"{path}, line {line}: {exc}") from None
        return table

    def to_markdown(self) -> str:
        """A Markdown table: one row per model and region, one column per metric, 4 significant digits."""
        metrics = list(dict.fromkeys(row.metric for row in self._rows.values()))
        groups: dict[tuple[str, str], dict[str, MetricRow]] = {}
        for row in self._rows.values():
            groups.setdefault((row.model, row.region), {})[row.metric] = row
        lines = ["| " + " | ".join(["model", "region", "utterances", *map(_cell, metrics)]) + " |",
                 "|" + "---|" * 3 + "---:|" * len(metrics)]
        for (model, region), cells in groups.items():
            counts = sorted({row.n_utterances for row in cells.values()})
            utterances = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
            values = [f"{cells[m].value:.4g}" if m in cells else "–" for m in metrics]
            lines.append("| " + " | ".join([_cell(model), _cell(region), utterances, *values]) + " |")
        return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
