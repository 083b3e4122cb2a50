"""Speech features aligned exactly to a motion clip's frames, their corpus normalisation and a disk cache.

Every generator in inference/ maps one row of speech features to one frame of motion, so the features
are computed on the motion's own time grid rather than resampled from an audio frame rate afterwards.

Time convention
---------------
Motion frame ``i`` covers the interval ``[i / fps, (i + 1) / fps)`` of the audio; its centre is
``(i + 0.5) / fps``. Feature row ``i`` is computed from analysis windows centred on that centre (for
`mel_slices`, from the fine mel frames around it). Windows reaching past either end of the audio see
silence there. A feature array always has exactly ``n_frames`` rows: by default
``round(duration_s * fps)`` (at least 1), but callers normally pass the motion clip's ``T``; rows past
the end of the computed ones repeat the last row, and extra rows are cut. ``extract(x, spec,
n_frames=T)`` is therefore the same as computing the default rows and padding or cutting them to ``T``,
which is what lets `extract_cached` keep one file per audio and spec.

Kinds (`FeatureSpec.kind`), one row per motion frame
----------------------------------------------------
``logmel``        [T, 80]  log(mel power + 1e-6), 80 bands, 64 ms Hann window (n_fft 1024 at 16 kHz).
``fbank``         [T, 40]  log(mel power + 1e-6), 40 bands, a window two motion frames long and a hop of
                           one (Greenwood et al.'s forked BLSTM: window 2/fps s, hop 1/fps s).
``mfcc_prosody``  [T, 27]  25 MFCCs (DCT-II of the dB mel spectrum, 40 bands, 64 ms window), F0 in Hz
                           (60-500 Hz, 0 where unvoiced; YIN, see below) and intensity (RMS of the motion frame's own interval, in
                           dBFS, floored at -100) — Sadoughi & Busso's separate/joint BLSTM inputs.
``egemaps``       [T, 25]  the 25 eGeMAPSv02 low-level descriptors from openSMILE (10 ms hop), averaged
                           over the descriptor frames whose centres fall inside each motion frame and
                           linearly interpolated for motion frames that hold none. Descriptors that are 0
                           where unvoiced (the ``_nz`` ones, e.g. F0) are averaged as they come, so a frame
                           across a voicing boundary gets a value in between.
``mel_slices``    [T, 32, 80]  for Wang et al.'s audio-to-landmark network: log-mel at 100 frames/s
                           (25 ms window) and, per motion frame, the `context` fine frames centred on its
                           centre (within half a fine hop); ``params["flatten"]`` gives [T, 32 * 80].

Spectra are computed by framing the signal at the motion-frame centres directly (a hop of 16000 / 29.97
samples is not a whole number, so librosa's integer-hop STFT cannot hit them) and applying librosa's
mel filter bank (Slaney scale and norm, as in ``librosa.feature.melspectrogram``). F0 is a vectorised
YIN (de Cheveigné & Kawahara 2002) on the same centred windows: ``librosa.yin`` has no voicing decision
and ``librosa.pyin`` runs at only a few times real time, while YIN's own aperiodicity (the minimum of the
cumulative mean normalised difference) is a good voicing test for speech.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import numbers
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.fft
import scipy.signal

from inference.audio import SAMPLE_RATE, atomic_output, content_sha256, decode

log = logging.getLogger(__name__)

# Bump whenever any kind's computation changes, so every cached feature file is recomputed.
FEATURES_VERSION = 2
KINDS = ("logmel", "fbank", "mfcc_prosody", "egemaps", "mel_slices")
LOG_FLOOR = 1e-6  # added to mel power before the log: about -138 dB, far below any recorded speech
DB_FLOOR = 1e-10  # smallest power before 10·log10 in the MFCCs (librosa.power_to_db's amin)
INTENSITY_FLOOR_DB = -100.0
F0_SILENCE_DBFS = -70.0  # windows quieter than this are unvoiced whatever their periodicity
F0_DIP_MARGIN = 0.02

EGEMAPS_LLD_NAMES = (
    "Loudness_sma3", "alphaRatio_sma3", "hammarbergIndex_sma3", "slope0-500_sma3", "slope500-1500_sma3",
    "spectralFlux_sma3", "mfcc1_sma3", "mfcc2_sma3", "mfcc3_sma3", "mfcc4_sma3",
    "F0semitoneFrom27.5Hz_sma3nz", "jitterLocal_sma3nz", "shimmerLocaldB_sma3nz", "HNRdBACF_sma3nz",
    "logRelF0-H1-H2_sma3nz", "logRelF0-H1-A3_sma3nz", "F1frequency_sma3nz", "F1bandwidth_sma3nz",
    "F1amplitudeLogRelF0_sma3nz", "F2frequency_sma3nz", "F2bandwidth_sma3nz", "F2amplitudeLogRelF0_sma3nz",
    "F3frequency_sma3nz", "F3bandwidth_sma3nz", "F3amplitudeLogRelF0_sma3nz",
)

# Every parameter a kind takes, with its default; a spec always carries all of them, so two specs that
# compute the same thing have the same cache key.
DEFAULT_PARAMS: dict[str, dict[str, bool | int | float]] = {
    "logmel": {"n_mels": 80, "window_s": 0.064},
    "fbank": {"n_mels": 40},
    "mfcc_prosody": {"n_mfcc": 25, "n_mels": 40, "window_s": 0.064, "f0_min_hz": 60.0, "f0_max_hz": 500.0,
                     "voicing_threshold": 0.35},
    "egemaps": {},
    "mel_slices": {"n_mels": 80, "hop_s": 0.01, "window_s": 0.025, "context": 32, "flatten": False},
}

ParamValue = bool | int | float


# --- the spec ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSpec:
    """What to compute: a kind, the motion frame rate it is aligned to, and the kind's parameters.

    `params` may be given as a mapping; it is stored as a sorted tuple of ``(name, value)`` pairs with
    every default filled in, so a spec is hashable and its JSON (`to_dict`) is canonical.

    >>> FeatureSpec("mel_slices", 25, {"context": 16}).param("context")
    16
    """

    kind: str
    fps: float
    params: tuple[tuple[str, ParamValue], ...] | Mapping[str, ParamValue] = field(default=())

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown feature kind {self.kind!r}; choose one of: {', '.join(KINDS)}")
        if isinstance(self.fps, bool) or not isinstance(self.fps, numbers.Real) or not math.isfinite(self.fps) \
                or self.fps <= 0:
            raise ValueError(f"fps must be a positive frame rate such as 25 or 29.97, got {self.fps!r}")
        object.__setattr__(self, "fps", float(self.fps))
        object.__setattr__(self, "params", _normalise_params(self.kind, self.params))

    def param(self, name: str) -> ParamValue:
        """The value of one parameter (defaults included)."""
        for key, value in self.params:
            if key == name:
                return value
        raise KeyError(f"{self.kind} has no parameter {name!r}; it takes: {', '.join(DEFAULT_PARAMS[self.kind])}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form: ``{"kind": ..., "fps": ..., "params": {...}}``."""
        return {"kind": self.kind, "fps": self.fps, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        """Inverse of `to_dict`."""
        missing = {"kind", "fps"} - set(data)
        if missing:
            raise ValueError(f"a feature spec needs 'kind' and 'fps' (and optionally 'params'); "
                             f"missing: {', '.join(sorted(missing))}")
        return cls(kind=data["kind"], fps=data["fps"], params=data.get("params") or {})

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the spec's part of a cache key."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


def _normalise_params(kind: str, given: tuple | Mapping) -> tuple[tuple[str, ParamValue], ...]:
    defaults = DEFAULT_PARAMS[kind]
    given = dict(given)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        allowed = ", ".join(defaults) or "no parameters"
        raise ValueError(f"{kind} does not take parameter(s) {', '.join(map(repr, unknown))}; it takes: {allowed}")
    params: dict[str, ParamValue] = {}
    for name, default in defaults.items():
        value = given.get(name, default)
        if isinstance(default, bool):
            ok = isinstance(value, (bool, np.bool_))
            value = bool(value) if ok else value
        elif isinstance(default, int):
            ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)) and value > 0
            value = int(value) if ok else value
        else:
            ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) \
                and math.isfinite(value) and value > 0
            value = float(value) if ok else value
        if not ok:
            expected = {bool: "true or false", int: "a positive whole number", float: "a positive number"}
            raise ValueError(f"{kind} parameter {name!r} must be {expected[type(default)]}, got {value!r}")
        if name.endswith("_s") and value < 0.001:
            raise ValueError(f"{kind} parameter {name!r} is in seconds and must be at least 0.001, got {value!r}")
        params[name] = value
    if kind == "mfcc_prosody":
        if params["n_mfcc"] > params["n_mels"]:
            raise ValueError(f"mfcc_prosody needs n_mfcc <= n_mels, got {params['n_mfcc']} > {params['n_mels']}")
        if params["f0_min_hz"] >= params["f0_max_hz"]:
            raise ValueError(f"mfcc_prosody needs f0_min_hz < f0_max_hz, got {params['f0_min_hz']} >= "
                             f"{params['f0_max_hz']}")
        if params["voicing_threshold"] >= 1:
            raise ValueError(f"mfcc_prosody voicing_threshold must be between 0 and 1 (0.3-0.4 suits speech), "
                             f"got {params['voicing_threshold']}")
    return tuple(sorted(params.items()))


def feature_shape(spec: FeatureSpec) -> tuple[int, ...]:
    """Shape of one row (one motion frame) of `extract(..., spec)`: ``(D,)``, or ``(context, n_mels)``."""
    if spec.kind in ("logmel", "fbank"):
        return (spec.param("n_mels"),)
    if spec.kind == "mfcc_prosody":
        return (spec.param("n_mfcc") + 2,)
    if spec.kind == "egemaps":
        return (len(EGEMAPS_LLD_NAMES),)
    context, n_mels = spec.param("context"), spec.param("n_mels")
    return (context * n_mels,) if spec.param("flatten") else (context, n_mels)


def feature_dim(spec: FeatureSpec) -> int:
    """Size of the last axis of the features: a network's input width (per slice step for `mel_slices`)."""
    return feature_shape(spec)[-1]


def feature_names(spec: FeatureSpec) -> list[str]:
    """A name for each position of the last axis, e.g. ``mfcc_00 .. mfcc_24, f0_hz, intensity_db``."""
    if spec.kind == "egemaps":
        return list(EGEMAPS_LLD_NAMES)
    if spec.kind == "mfcc_prosody":
        return [f"mfcc_{k:02d}" for k in range(spec.param("n_mfcc"))] + ["f0_hz", "intensity_db"]
    bands = [f"mel_{k:02d}" for k in range(spec.param("n_mels"))]
    if spec.kind == "mel_slices" and spec.param("flatten"):
        return [f"t{t:02d}_{band}" for t in range(spec.param("context")) for band in bands]
    return bands


def frame_count(duration_s: float, fps: float) -> int:
    """The default number of feature rows for audio of `duration_s`: ``round(duration_s * fps)``, at least 1."""
    return max(1, round(duration_s * fps))


# --- extraction ----------------------------------------------------------------------------------------


def extract(
    samples: np.ndarray,
    spec: FeatureSpec,
    *,
    sample_rate: int = SAMPLE_RATE,
    n_frames: int | None = None,
) -> np.ndarray:
    """Compute `spec`'s features for mono `samples`, one row per motion frame.

    Parameters
    ----------
    samples
        1-D mono audio, finite values (normally -1..1, as `inference.audio.decode` returns).
    spec
        The kind, motion frame rate and parameters.
    sample_rate
        Rate of `samples` in Hz.
    n_frames
        Rows wanted, normally the motion clip's ``T``; default ``round(duration_s * spec.fps)``.

    Returns
    -------
    np.ndarray
        float32 of shape ``(n_frames, *feature_shape(spec))``.
    """
    if not isinstance(spec, FeatureSpec):
        raise TypeError(f"spec must be a FeatureSpec, got {type(spec).__name__}; build one with "
                        f"FeatureSpec(kind, fps, params)")
    samples = _checked_samples(samples)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    if n_frames is not None and (isinstance(n_frames, bool) or not isinstance(n_frames, numbers.Integral)
                                 or n_frames <= 0):
        raise ValueError(f"n_frames must be a positive whole number of motion frames, got {n_frames!r}")
    sample_rate = int(sample_rate)
    natural = frame_count(len(samples) / sample_rate, spec.fps)
    centres_s = (np.arange(natural) + 0.5) / spec.fps
    features = _EXTRACTORS[spec.kind](samples, sample_rate, spec, centres_s)
    features = features.reshape(natural, *feature_shape(spec))
    return _fit_rows(features, natural if n_frames is None else int(n_frames)).astype(np.float32, copy=False)


def _checked_samples(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"samples must be a 1-D mono signal, got shape {samples.shape}; average the channels first")
    if samples.size == 0:
        raise ValueError("samples are empty; there is no audio to compute features from")
    if not np.issubdtype(samples.dtype, np.number) or np.issubdtype(samples.dtype, np.complexfloating):
        raise ValueError(f"samples must be real numbers, got dtype {samples.dtype}")
    samples = samples.astype(np.float32, copy=False)
    finite = np.isfinite(samples)
    if not finite.all():
        first = int(np.argmin(finite))
        raise ValueError(f"samples contain NaN or infinity ({int((~finite).sum())} values, first at index {first}); "
                         f"decode the audio again or repair the file")
    return samples


def _fit_rows(features: np.ndarray, n_frames: int) -> np.ndarray:
    """Cut `features` to `n_frames` rows, or pad with copies of the last row."""
    if len(features) >= n_frames:
        return features[:n_frames]
    pad = [(0, n_frames - len(features))] + [(0, 0)] * (features.ndim - 1)
    return np.pad(features, pad, mode="edge")


def _logmel(samples: np.ndarray, sample_rate: int, spec: FeatureSpec, centres_s: np.ndarray) -> np.ndarray:
    window = round(spec.param("window_s") * sample_rate)
    return np.log(_mel_power(samples, sample_rate, centres_s, window, spec.param("n_mels")) + LOG_FLOOR)


def _fbank(samples: np.ndarray, sample_rate: int, spec: FeatureSpec, centres_s: np.ndarray) -> np.ndarray:
    window = round(2 * sample_rate / spec.fps)  # two motion frames long, one per motion frame
    return np.log(_mel_power(samples, sample_rate, centres_s, window, spec.param("n_mels")) + LOG_FLOOR)


def _mfcc_prosody(samples: np.ndarray, sample_rate: int, spec: FeatureSpec, centres_s: np.ndarray) -> np.ndarray:
    window = round(spec.param("window_s") * sample_rate)
    frames = _frames(samples, centres_s, sample_rate, window)
    mel = _power_spectrum(frames) @ _mel_basis(sample_rate, _n_fft(window), spec.param("n_mels")).T
    mfcc = scipy.fft.dct(10.0 * np.log10(np.maximum(mel, DB_FLOOR)), type=2, norm="ortho", axis=1)
    f0 = _yin_f0(frames, sample_rate, spec.param("f0_min_hz"), spec.param("f0_max_hz"),
                 spec.param("voicing_threshold"))
    # Intensity is the energy of the motion frame's own interval, so it moves exactly when the motion should.
    interval = _frames(samples, centres_s, sample_rate, max(1, round(sample_rate / spec.fps)))
    rms = np.sqrt(np.mean(np.square(interval, dtype=np.float64), axis=1))
    intensity = np.maximum(20.0 * np.log10(np.maximum(rms, 1e-300)), INTENSITY_FLOOR_DB)
    return np.column_stack([mfcc[:, : spec.param("n_mfcc")], f0, intensity])


def _egemaps(samples: np.ndarray, sample_rate: int, spec: FeatureSpec, centres_s: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        # Audio shorter than one 60 ms pitch window comes back as a row of NaN, refused just below.
        warnings.filterwarnings("ignore", message="Segment too short", category=UserWarning)
        lld = _smile().process_signal(samples, sample_rate)
    names = tuple(lld.columns)
    if names != EGEMAPS_LLD_NAMES:
        raise RuntimeError(f"openSMILE returned eGeMAPS descriptors {names}, expected {EGEMAPS_LLD_NAMES}; "
                           f"install the opensmile version this project pins")
    values = lld.to_numpy(dtype=np.float64)
    complete = np.isfinite(values).all(axis=1)
    if not complete.any():
        raise ValueError(f"audio of {len(samples) / sample_rate * 1000:.0f} ms is too short for eGeMAPS; "
                         f"it needs at least 60 ms")
    starts = lld.index.get_level_values("start").total_seconds().to_numpy()
    ends = lld.index.get_level_values("end").total_seconds().to_numpy()
    lld_centres = starts + np.median(ends - starts) / 2  # the last frame's end is cut at the end of the audio
    n = len(centres_s)
    frame = np.floor(lld_centres * spec.fps).astype(np.int64)
    inside = (frame >= 0) & (frame < n) & complete
    counts = np.bincount(frame[inside], minlength=n)
    sums = np.zeros((n, values.shape[1]))
    np.add.at(sums, frame[inside], values[inside])
    filled = counts > 0
    if not filled.any():
        raise ValueError("no eGeMAPS frame falls inside the motion frames; is the audio shorter than one frame?")
    out = np.empty_like(sums)
    out[filled] = sums[filled] / counts[filled, None]
    if not filled.all():
        for column in range(values.shape[1]):
            out[~filled, column] = np.interp(centres_s[~filled], centres_s[filled], out[filled, column])
    return out


def _mel_slices(samples: np.ndarray, sample_rate: int, spec: FeatureSpec, centres_s: np.ndarray) -> np.ndarray:
    hop_s, context = spec.param("hop_s"), spec.param("context")
    n_fine = int(np.floor(len(samples) / sample_rate / hop_s)) + 1  # fine frame j is centred at j * hop_s
    window = round(spec.param("window_s") * sample_rate)
    fine = np.log(_mel_power(samples, sample_rate, np.arange(n_fine) * hop_s, window, spec.param("n_mels"))
                  + LOG_FLOOR)
    # The slice's middle, (first + (context - 1) / 2) * hop_s, is the motion frame's centre within hop_s / 2.
    # Round away float noise before flooring: at 25 fps with an even context every start is an exact tie,
    # which must always go the same way (half up), or slices jump by 3 or 5 fine frames instead of 4.
    first = np.floor(np.round(centres_s / hop_s - (context - 1) / 2, 6) + 0.5).astype(np.int64)
    index = np.clip(first[:, None] + np.arange(context), 0, n_fine - 1)
    return fine[index]


_EXTRACTORS: dict[str, Callable[[np.ndarray, int, FeatureSpec, np.ndarray], np.ndarray]] = {
    "logmel": _logmel,
    "fbank": _fbank,
    "mfcc_prosody": _mfcc_prosody,
    "egemaps": _egemaps,
    "mel_slices": _mel_slices,
}


# --- signal helpers ------------------------------------------------------------------------------------


def _frames(samples: np.ndarray, centres_s: np.ndarray, sample_rate: int, length: int) -> np.ndarray:
    """``[len(centres_s), length]`` windows of `samples`, window k centred on ``centres_s[k]``; zeros past the ends."""
    starts = np.floor(centres_s * sample_rate - length / 2 + 0.5).astype(np.int64)
    starts = np.clip(starts, -length, len(samples))  # a window wholly past an end is all padding
    padded = np.pad(samples, length)
    return padded[starts[:, None] + length + np.arange(length)]


def _n_fft(window: int) -> int:
    return 1 << max(0, int(window - 1).bit_length())


@functools.lru_cache(maxsize=32)
def _hann(length: int) -> np.ndarray:
    return scipy.signal.get_window("hann", length, fftbins=True).astype(np.float32)  # periodic, as librosa


@functools.lru_cache(maxsize=32)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    import librosa  # deferred: importing librosa costs ~1 s, and most callers of this module need only the spec

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=sample_rate / 2)


def _power_spectrum(frames: np.ndarray) -> np.ndarray:
    """|FFT|² of Hann-windowed frames, zero-padded to the next power of two."""
    spectrum = np.fft.rfft(frames * _hann(frames.shape[1]), n=_n_fft(frames.shape[1]), axis=1)
    return spectrum.real ** 2 + spectrum.imag ** 2


def _mel_power(samples: np.ndarray, sample_rate: int, centres_s: np.ndarray, window: int, n_mels: int) -> np.ndarray:
    power = _power_spectrum(_frames(samples, centres_s, sample_rate, window))
    return power @ _mel_basis(sample_rate, _n_fft(window), n_mels).T


def _yin_f0(frames: np.ndarray, sample_rate: int, f0_min: float, f0_max: float, threshold: float) -> np.ndarray:
    """F0 in Hz per frame by YIN, 0 where the frame is unvoiced or quieter than `F0_SILENCE_DBFS`.

    A frame is voiced when the cumulative mean normalised difference (its aperiodicity) has a local
    minimum below `threshold` between the lags of `f0_max` and `f0_min`. The period is the shortest lag
    whose local minimum lies within `F0_DIP_MARGIN` of the deepest, refined by a parabola through the raw
    difference. On espeak-ng speech this agrees with ``librosa.pyin`` within 50 cents on all but about 1 %
    of the frames both call voiced, and runs a few hundred times faster.
    """
    n, length = frames.shape
    lag_min = max(2, int(np.floor(sample_rate / f0_max)))
    lag_max = int(np.ceil(sample_rate / f0_min))
    width = length - lag_max - 1  # integration window: every lag up to lag_max + 1 fits in the frame
    if width < lag_max:
        raise ValueError(f"mfcc_prosody window_s={length / sample_rate:g} is too short to find F0 down to "
                         f"{f0_min:g} Hz; use window_s >= {2 * (lag_max + 1) / sample_rate:.3f} or raise f0_min_hz")
    x = frames.astype(np.float64)  # d(τ) = e(0) + e(τ) - 2 r(τ) cancels badly in single precision
    # r(τ) pairs x[j] (j < width) with x[j + τ], and j + τ < length for every lag used, so a circular
    # correlation of `length` points never wraps.
    size = _n_fft(length)
    lags = np.arange(lag_max + 2)
    r = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(x[:, :width], size)), size)[:, lags]
    cumulative_energy = np.concatenate([np.zeros((n, 1)), np.cumsum(x * x, axis=1)], axis=1)
    energy = cumulative_energy[:, lags + width] - cumulative_energy[:, lags]
    d = np.maximum(energy[:, :1] + energy - 2.0 * r, 0.0)
    d[:, 0] = 0.0
    running = np.cumsum(d[:, 1:], axis=1)
    cmnd = np.ones_like(d)
    np.divide(d[:, 1:] * lags[1:], running, out=cmnd[:, 1:], where=running > 0)

    core = cmnd[:, lag_min: lag_max + 1]
    minima = (core <= cmnd[:, lag_min - 1: lag_max]) & (core < cmnd[:, lag_min + 1: lag_max + 2])
    deepest = np.where(minima, core, np.inf).min(axis=1)
    voiced = deepest < threshold
    # The shortest lag whose dip is as deep as the deepest one: the first dip below a fixed threshold
    # jumps an octave up where a half-period dip is shallow, the deepest alone an octave down.
    dips = minima & (core <= deepest[:, None] + F0_DIP_MARGIN)
    lag = dips.argmax(axis=1) + lag_min
    rows = np.arange(n)
    before, at, after = d[rows, lag - 1], d[rows, lag], d[rows, lag + 1]
    curvature = before - 2.0 * at + after
    shift = np.zeros(n)
    np.divide(0.5 * (before - after), curvature, out=shift, where=curvature > 0)
    period = lag + np.clip(shift, -1.0, 1.0)
    loud = energy[:, 0] / width > 10.0 ** (F0_SILENCE_DBFS / 10.0)
    return np.where(voiced & loud, sample_rate / period, 0.0)


@functools.lru_cache(maxsize=1)
def _smile():
    try:
        import opensmile
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError("the egemaps features need the opensmile package; install it with "
                                  "`pip install opensmile`") from exc
    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                           feature_level=opensmile.FeatureLevel.LowLevelDescriptors)


# --- normalisation -------------------------------------------------------------------------------------


@dataclass(eq=False)
class Normalizer:
    """Per-dimension standardisation with corpus statistics: ``(x - mean) / std`` over the last axis.

    Fit it on the training corpus, apply it to every input, and save `to_dict()` in the checkpoint.
    `std` is floored at `STD_FLOOR`, so a constant feature maps to 0 instead of blowing up.
    """

    mean: np.ndarray
    std: np.ndarray
    STD_FLOOR: ClassVar[float] = 1e-5

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64)
        std = np.asarray(self.std, dtype=np.float64)
        if mean.ndim != 1 or std.shape != mean.shape or mean.size == 0:
            raise ValueError(f"mean and std must be 1-D and of the same non-zero length, got shapes {mean.shape} "
                             f"and {std.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise ValueError("mean and std must be finite; refit the normalizer on features without NaN or infinity")
        # Kept in float64: a feature like 1e4 ± 0.01 loses its mean to float32 rounding.
        self.mean = mean
        self.std = np.maximum(std, self.STD_FLOOR)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def fit(cls, arrays: Iterable[np.ndarray]) -> Normalizer:
        """Statistics over every row of every array (``[T, D]`` or ``[T, W, D]``), one array at a time.

        `arrays` may be a generator, so a corpus never has to fit in memory; per-array moments are merged
        with Chan et al.'s update, which stays accurate where a plain sum of squares would cancel.
        """
        count, mean, m2, dim = 0, None, None, None
        for k, array in enumerate(arrays):
            array = np.asarray(array, dtype=np.float64)
            if array.ndim < 1 or (dim is not None and array.shape[-1] != dim):
                raise ValueError(f"array {k} has shape {array.shape}; every array must end in the same feature "
                                 f"dimension{f' ({dim})' if dim is not None else ''}")
            dim = array.shape[-1]
            rows = array.reshape(-1, dim)
            if len(rows) == 0:
                continue
            if not np.isfinite(rows).all():
                raise ValueError(f"array {k} contains NaN or infinity; fix or drop that utterance before fitting")
            batch_mean = rows.mean(axis=0)
            batch_m2 = np.square(rows - batch_mean).sum(axis=0)
            if mean is None:
                count, mean, m2 = len(rows), batch_mean, batch_m2
                continue
            total = count + len(rows)
            delta = batch_mean - mean
            mean = mean + delta * (len(rows) / total)
            m2 = m2 + batch_m2 + delta ** 2 * (count * len(rows) / total)
            count = total
        if mean is None:
            raise ValueError("cannot fit a normalizer on no data; pass at least one non-empty feature array")
        return cls(mean=mean, std=np.sqrt(m2 / count))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalise: ``(x - mean) / std`` along the last axis, computed in float64, returned as float32."""
        x = self._checked(x)
        return ((x - self.mean) / self.std).astype(np.float32)

    def invert(self, x: np.ndarray) -> np.ndarray:
        """Undo `apply`: ``x * std + mean``, returned as float32."""
        x = self._checked(x)
        return (x * self.std + self.mean).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        """``{"mean": [...], "std": [...]}`` of plain floats, for a checkpoint or JSON."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normalizer:
        """Inverse of `to_dict`."""
        if not isinstance(data, Mapping) or "mean" not in data or "std" not in data:
            raise ValueError("a normalizer is stored as {'mean': [...], 'std': [...]}; the checkpoint lacks one")
        return cls(mean=np.asarray(data["mean"]), std=np.asarray(data["std"]))

    def _checked(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"features of shape {x.shape} do not end in this normalizer's dimension {self.dim}; "
                             f"was it fitted on another feature kind?")
        return x


# --- disk cache ----------------------------------------------------------------------------------------


def cache_key(audio_sha256: str, spec: FeatureSpec) -> str:
    """Hex SHA-256 naming the cached features of the audio with content hash `audio_sha256` under `spec`."""
    payload = json.dumps({"features_version": FEATURES_VERSION, "audio_sha256": audio_sha256,
                          "sample_rate": SAMPLE_RATE, "spec": spec.to_dict()}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def extract_cached(
    audio_path: str | os.PathLike,
    spec: FeatureSpec,
    *,
    cache_dir: str | os.PathLike,
    n_frames: int | None = None,
) -> np.ndarray:
    """`extract` on the decoded file, stored in `cache_dir` under a key of its content, spec and version.

    The cache holds the default-length features (``round(duration_s * fps)`` rows) in
    ``<cache_dir>/<kind>-<key>.npy``, written atomically; `n_frames` is applied on the way out. A cache
    file that cannot be read or does not look like this spec's features is recomputed and replaced.
    """
    audio_path = Path(audio_path)
    if n_frames is not None and (isinstance(n_frames, bool) or not isinstance(n_frames, numbers.Integral)
                                 or n_frames <= 0):
        raise ValueError(f"n_frames must be a positive whole number of motion frames, got {n_frames!r}")
    path = Path(cache_dir) / f"{spec.kind}-{cache_key(content_sha256(audio_path), spec)}.npy"
    features = _load_cached(path, spec)
    if features is None:
        features = extract(decode(audio_path, SAMPLE_RATE), spec, sample_rate=SAMPLE_RATE)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as partial:
            with open(partial, "wb") as handle:
                np.save(handle, features, allow_pickle=False)
    return features if n_frames is None else _fit_rows(features, int(n_frames))


def _load_cached(path: Path, spec: FeatureSpec) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        features = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        log.warning("feature cache file %s is unreadable (%s); recomputing it", path, exc)
        return None
    if (not isinstance(features, np.ndarray) or features.dtype != np.float32 or features.ndim < 2
            or features.shape[0] < 1 or features.shape[1:] != feature_shape(spec) or not np.isfinite(features).all()):
        log.warning("feature cache file %s does not hold %s features of shape [T, %s]; recomputing it",
                    path, spec.kind, ", ".join(map(str, feature_shape(spec))))
        return None
    return features
