"""Feature speed: seconds per call and multiple of real time for each speech feature kind, on one CPU thread.

It makes ten seconds of speech with espeak-ng (three sentences in two voices, cut to 10 s; a synthetic
voiced/unvoiced signal when espeak-ng is missing), decodes it to 16 kHz mono with inference.audio, and
for each kind in inference.features runs `extract` once to warm up (librosa's lazy imports, openSMILE's
set-up) and then `--repeats` times, timing each call. The figure per kind is the median call;
"x real time" is the audio's duration divided by it, and "x (cpu)" the same from the process's CPU
seconds, which other work on a shared machine inflates less than the wall clock. The target is at least
100x real time per kind, so a corpus of hours is featurised in minutes and features for a new utterance
cost nothing next to generation.

BLAS/OpenMP pools are pinned to one thread before numpy is imported, so the figures are per core.

    .venv/bin/python bench/feature_speed.py                    # fps 25, 5 repeats
    .venv/bin/python bench/feature_speed.py --fps 29.97 --repeats 10 --with-pyin

The last line printed is one JSON object with every figure.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inference import audio, features  # noqa: E402

TARGET_X_REALTIME = 100
AUDIO_S = 10.0
SENTENCES = [
    ("en-us", "The quick brown fox jumps over the lazy dog, while the robot nods and raises its brows."),
    ("en-gb+f3", "Please rate how natural the motion of the face looks, and whether it fits the speech."),
    ("en-us", "Every answer is saved on the server as it is given."),
]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fps", type=float, default=25.0, help="motion frame rate the features align to (default 25)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per kind after one warm-up (default 5)")
    p.add_argument("--kinds", nargs="+", default=list(features.KINDS), choices=features.KINDS,
                   help="feature kinds to time (default: all)")
    p.add_argument("--with-pyin", action="store_true",
                   help="also time librosa.pyin on the same audio, the F0 tracker mfcc_prosody does not use")
    return p.parse_args()


def speech_samples() -> tuple[np.ndarray, str]:
    """Ten seconds of 16 kHz speech, and where it came from."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return synthetic_speech(AUDIO_S), "synthetic (espeak-ng not installed)"
    parts = []
    with tempfile.TemporaryDirectory(prefix="feature-speed-") as scratch:
        for k, (voice, text) in enumerate(SENTENCES):
            wav = Path(scratch) / f"s{k}.wav"
            subprocess.run([espeak, "-v", voice, "-s", "150", "-w", str(wav), text], check=True, capture_output=True)
            parts.append(audio.decode(wav, audio.SAMPLE_RATE))
    speech = np.concatenate(parts)[: round(AUDIO_S * audio.SAMPLE_RATE)]
    return speech, f"espeak-ng, {len(SENTENCES)} sentences cut to {len(speech) / audio.SAMPLE_RATE:g} s"


def synthetic_speech(seconds: float) -> np.ndarray:
    """Syllable-like bursts: a gliding harmonic voice alternating with noise, 4 syllables per second."""
    rng = np.random.default_rng(0)
    t = np.arange(round(seconds * audio.SAMPLE_RATE)) / audio.SAMPLE_RATE
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / audio.SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    syllable = (np.sin(2 * np.pi * 4 * t) > 0).astype(float)
    signal = 0.2 * voice * syllable + 0.05 * rng.standard_normal(len(t)) * (1 - syllable)
    return signal.astype(np.float32)


def time_calls(call, repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds of each of `repeats` calls, after one warm-up call."""
    call()
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def summarise(wall: list[float], cpu: list[float], audio_s: float) -> dict:
    median_wall, median_cpu = statistics.median(wall), statistics.median(cpu)
    return {"s_per_call": round(median_wall, 5), "min_s": round(min(wall), 5), "cpu_s_per_call": round(median_cpu, 5),
            "x_realtime": round(audio_s / median_wall, 1), "x_realtime_cpu": round(audio_s / max(median_cpu, 1e-9), 1)}


def table_cells(row: dict) -> str:
    return (f"{row['s_per_call']:>10.4f}{row['min_s']:>10.4f}{row['cpu_s_per_call']:>10.4f}"
            f"{row['x_realtime']:>12.0f}x{row['x_realtime_cpu']:>9.0f}x")


def main() -> int:
    args = parse_args()
    samples, source = speech_samples()
    audio_s = len(samples) / audio.SAMPLE_RATE
    print(f"audio: {audio_s:.2f} s of {source}, 16 kHz mono; motion at {args.fps:g} fps "
          f"({features.frame_count(audio_s, args.fps)} frames); one thread; median of {args.repeats} calls "
          f"after one warm-up", flush=True)
    print(f"{'kind':<14}{'shape':>16}{'s/call':>10}{'min s':>10}{'cpu s':>10}{'x real time':>13}{'x (cpu)':>10}"
          f"  target {TARGET_X_REALTIME}x")
    rows = {}
    for kind in args.kinds:
        spec = features.FeatureSpec(kind, args.fps)
        out = features.extract(samples, spec)
        wall, cpu = time_calls(lambda spec=spec: features.extract(samples, spec), args.repeats)
        rows[kind] = row = summarise(wall, cpu, audio_s)
        verdict = "met" if row["x_realtime"] >= TARGET_X_REALTIME else "MISSED"
        print(f"{kind:<14}{str(tuple(out.shape)):>16}{table_cells(row)}  {verdict}", flush=True)
    # A corpus as training extracts it (inference.training.load_sequences): utterances spread over
    # `feature_workers()` threads; the figure is audio seconds per wall-clock second for the whole machine.
    from concurrent.futures import ThreadPoolExecutor

    from inference.training import feature_workers

    workers = feature_workers()
    corpus = {}
    n_utterances = 4 * workers
    print(f"corpus of {n_utterances} x {audio_s:.0f} s on {workers} thread(s), as training extracts it:", flush=True)
    for kind in args.kinds:
        spec = features.FeatureSpec(kind, args.fps)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            started = time.perf_counter()
            list(pool.map(lambda _, spec=spec: features.extract(samples, spec), range(n_utterances)))
            wall = time.perf_counter() - started
        corpus[kind] = round(n_utterances * audio_s / wall, 1)
        verdict = "met" if corpus[kind] >= TARGET_X_REALTIME else "MISSED"
        print(f"  {kind:<14}{corpus[kind]:>10.1f}x real time  {verdict}", flush=True)
    reference = {}
    if args.with_pyin:
        import librosa

        hop = round(audio.SAMPLE_RATE / args.fps)
        wall, cpu = time_calls(lambda: librosa.pyin(samples, fmin=60, fmax=500, sr=audio.SAMPLE_RATE,
                                                    frame_length=1024, hop_length=hop), max(1, args.repeats // 2))
        reference["librosa_pyin"] = row = summarise(wall, cpu, audio_s)
        print(f"{'(librosa.pyin)':<14}{'':>16}{table_cells(row)}  reference only: the F0 tracker mfcc_prosody "
              f"does not use", flush=True)
    print(json.dumps({
        "bench": "feature_speed",
        "fps": args.fps,
        "audio_s": round(audio_s, 3),
        "audio_source": source,
        "threads": 1,
        "repeats": args.repeats,
        "target_x_realtime": TARGET_X_REALTIME,
        "x_realtime": {kind: row["x_realtime"] for kind, row in rows.items()},
        "x_realtime_cpu": {kind: row["x_realtime_cpu"] for kind, row in rows.items()},
        "s_per_call": {kind: row["s_per_call"] for kind, row in rows.items()},
        "cpu_s_per_call": {kind: row["cpu_s_per_call"] for kind, row in rows.items()},
        "target_met": {kind: row["x_realtime"] >= TARGET_X_REALTIME for kind, row in rows.items()},
        "corpus_threads": workers,
        "corpus_x_realtime": corpus,
        "corpus_target_met": {kind: value >= TARGET_X_REALTIME for kind, value in corpus.items()},
        "reference": reference,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
