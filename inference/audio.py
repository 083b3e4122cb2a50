"""Audio in: decode any file ffmpeg reads to mono float32 samples, write the corpus's canonical WAV, and
refuse audio that cannot be used (unreadable, empty, silent).

Every model and feature in inference/ works on 16 kHz mono speech (`SAMPLE_RATE`). Uploaded and
imported audio is decoded by the ffmpeg binary, so WAV, FLAC, MP3, M4A/AAC and the rest all arrive as the
same kind of array; mono or stereo 16-bit PCM WAV already at the wanted rate (what `transcode_to_wav`
writes, so every corpus file) is read directly with the standard library, sparing an ffmpeg process.

Problems with the audio itself raise `AudioError`, whose message names the file and says what to do.
A missing file raises `FileNotFoundError`; a missing ffmpeg binary raises `RuntimeError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import numbers
import os
import secrets
import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path

import ffmpeg
import numpy as np

SAMPLE_RATE = 16_000
SILENCE_DBFS = -60.0  # RMS level below which a whole file counts as silent
_HASH_CHUNK = 1 << 20
_FFMPEG_QUIET = ("-hide_banner", "-nostdin", "-loglevel", "error")
# ffmpeg's stereo-to-mono matrix is 0.707·(L + R), which clips loud correlated stereo; scaling the matrix
# to a gain of at most 1 makes it the plain average (L + R) / 2, the same as the WAV fast path.
_DOWNMIX = {"rematrix_maxval": 1.0}


class AudioError(ValueError):
    """The audio in `path` cannot be used: unreadable, without samples, or silent."""

    def __init__(self, message: str, *, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        super().__init__(message)


def decode(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode an audio file to mono float32 samples in -1..1 at `sample_rate`.

    Parameters
    ----------
    path
        Any file with an audio stream that ffmpeg can read; the first audio stream is used.
    sample_rate
        Rate of the returned samples in Hz; the audio is resampled by ffmpeg. Stereo is averaged to mono;
        surround layouts get ffmpeg's standard downmix.

    Returns
    -------
    np.ndarray
        1-D float32 array of at least one sample.

    Raises
    ------
    FileNotFoundError
        `path` does not exist.
    AudioError
        ffmpeg cannot read the file, it has no audio stream, or the stream has no samples.
    """
    path = Path(path)
    sample_rate = _check_rate(sample_rate)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    samples = _read_pcm16_wav(path, sample_rate)
    if samples is None:
        samples = _decode_with_ffmpeg(path, sample_rate)
    if samples.size == 0:
        raise AudioError(f"{path} contains no audio samples; record or export the audio again", path=path)
    return samples


def transcode_to_wav(src: str | os.PathLike, dst: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write `src` as mono 16-bit PCM WAV at `sample_rate` to `dst`, atomically and without metadata.

    The file appears under `dst` only once complete (it is written under a temporary name in the same
    folder and renamed), so a reader never sees half a file and a crash leaves nothing behind. Tags are
    dropped and ffmpeg's bit-exact flags are set, so the same input always gives the same bytes.

    Raises
    ------
    FileNotFoundError
        `src` does not exist.
    AudioError
        ffmpeg cannot read `src`, or it has no audio samples.
    """
    src, dst = Path(src), Path(dst)
    sample_rate = _check_rate(sample_rate)
    if not src.is_file():
        raise FileNotFoundError(f"audio file not found: {src}")
    with atomic_output(dst) as partial:
        args = (
            ffmpeg.input(_ffmpeg_url(src))["a:0"]
            .output(_ffmpeg_url(partial), f="wav", acodec="pcm_s16le", ac=1, ar=sample_rate, **_DOWNMIX,
                    map_metadata=-1, fflags="+bitexact", **{"flags:a": "+bitexact"})
            .global_args(*_FFMPEG_QUIET)
            .overwrite_output()
            .compile()
        )
        result = _run_ffmpeg(args)
        if result.returncode != 0:
            raise AudioError(f"ffmpeg cannot convert {src} to WAV ({_tail(result.stderr)}); check that the file "
                             f"is an audio recording and not damaged", path=src)
        with wave.open(os.fspath(partial), "rb") as written:
            if written.getnframes() == 0:
                raise AudioError(f"{src} contains no audio samples; record or export the audio again", path=src)
    return dst


def check_not_silent(samples: np.ndarray, path: str | os.PathLike, threshold_dbfs: float = SILENCE_DBFS) -> float:
    """Raise `AudioError` unless `samples` (from `path`) are louder than `threshold_dbfs`; return the level.

    The level is the RMS of all samples in dB relative to full scale (a full-scale square wave is
    0 dBFS, a full-scale sine about -3 dBFS). `path` is used only to name the file in the message.
    """
    samples = np.asarray(samples)
    if samples.size == 0:
        raise AudioError(f"{path} contains no audio samples; record or export the audio again", path=path)
    squares = np.square(samples, dtype=np.float64)
    if not np.all(np.isfinite(squares)):
        raise AudioError(f"{path} decoded to non-finite samples (NaN or infinity); export it again as "
                         f"PCM WAV or FLAC", path=path)
    rms = float(np.sqrt(np.mean(squares)))
    level = 20.0 * np.log10(rms) if rms > 0 else -np.inf
    if level < threshold_dbfs:
        raise AudioError(f"{path} is silent: its RMS level is {level:.1f} dBFS, below the {threshold_dbfs:g} dBFS "
                         f"threshold; check the recording level and that the right channel or track was exported",
                         path=path)
    return level


def content_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file's bytes, read in chunks (the cache key for anything derived from it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_output(final_path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `final_path`; on success fsync and rename it into place, else delete it.

    The temporary name starts with a dot and ends in ``.partial``, in the same folder, so the rename is
    atomic and a reader sees either the old file or the complete new one.
    """
    final_path = Path(final_path)
    partial = final_path.with_name(f".{final_path.name}.{secrets.token_hex(6)}.partial")
    try:
        yield partial
        with open(partial, "rb") as written:
            os.fsync(written.fileno())
        os.replace(partial, final_path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


# --- helpers -------------------------------------------------------------------------------------------


def _check_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    return int(sample_rate)


def _read_pcm16_wav(path: Path, sample_rate: int) -> np.ndarray | None:
    """Samples of a plain 16-bit PCM WAV at `sample_rate`, or None when the file is anything else."""
    try:
        with wave.open(os.fspath(path), "rb") as pcm:
            if pcm.getsampwidth() != 2 or pcm.getframerate() != sample_rate or pcm.getnchannels() not in (1, 2):
                return None  # surround layouts are left to ffmpeg's downmix
            channels = pcm.getnchannels()
            raw = pcm.readframes(pcm.getnframes())
    except (wave.Error, EOFError):
        return None  # not a WAV the stdlib reads (compressed, float, extensible, damaged): ffmpeg decides
    pcm16 = np.frombuffer(raw, dtype="<i2")
    pcm16 = pcm16[: len(pcm16) - len(pcm16) % channels].reshape(-1, channels)
    samples = pcm16[:, 0] if channels == 1 else pcm16.mean(axis=1, dtype=np.float64)
    return (samples / 32768.0).astype(np.float32)


def _decode_with_ffmpeg(path: Path, sample_rate: int) -> np.ndarray:
    args = (
        ffmpeg.input(_ffmpeg_url(path))["a:0"]
        .output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=sample_rate, **_DOWNMIX)
        .global_args(*_FFMPEG_QUIET)
        .compile()
    )
    result = _run_ffmpeg(args)
    if result.returncode != 0:
        raise AudioError(f"ffmpeg cannot decode {path} ({_tail(result.stderr)}); check that the file is an audio "
                         f"recording and not damaged, or convert it to WAV or FLAC", path=path)
    samples = np.frombuffer(result.stdout, dtype="<f4")
    # Lossy decoders overshoot full scale a little; callers are promised -1..1.
    return np.clip(samples, -1.0, 1.0).astype(np.float32)


def _run_ffmpeg(args: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise RuntimeError("ffmpeg is not installed; install the Debian package ffmpeg") from exc


def _ffmpeg_url(path: Path) -> str:
    # "file:" stops ffmpeg reading a name such as "a:b.wav" as a protocol, or "-x.wav" as an option.
    return f"file:{Path(path).resolve()}"


def _tail(stderr: bytes | None, limit: int = 500) -> str:
    text = (stderr or b"").decode("utf-8", "replace").strip()
    return text[-limit:] or "no message"
