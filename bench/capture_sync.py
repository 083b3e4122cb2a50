"""Benchmark of filming a robot as a stimulus (issue 6): alignment error and overhead of simulated captures.

    .venv/bin/python bench/capture_sync.py [--captures 20] [--seconds 2.0] [--size 256]

Runs `render.hardware.capture.capture_stimulus` with the simulated robot filmed by the simulated camera in real
time, over a grid of link latencies (0–300 ms), jitters (σ 0–30 ms), camera delays, 2 % dropped frames and
pixel noise. The alignment error of each capture is its estimate of where the speech's first commanded motion
shows in the recording minus the truth from the simulator's logs (the mean instant the trajectory's commands
took effect, plus the camera's delay, minus the camera's first frame); the target is |error| < one frame
(40 ms at 25 fps). Overhead is each capture's wall time beyond the stimulus's own duration (pre-roll, marker,
tail, camera start/stop, analysis, encoding). Prints one line per capture; the last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import numpy as np  # noqa: E402

FPS = 25
GRID = [  # latency ms, jitter σ ms, camera delay ms
    (0, 0, 0), (50, 5, 20), (100, 10, 30), (150, 15, 40), (200, 20, 30),
    (250, 10, 60), (300, 20, 40), (300, 30, 80), (75, 0, 0), (175, 25, 50),
]


def speech(path: Path, seconds: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 48000)) / 48000
    gate = np.sin(2 * np.pi * rng.uniform(2, 4) * t) > 0
    signal = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 250) * t) * gate
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(48000)
        out.writeframes((signal * 32767).astype("<i2").tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captures", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each stimulus")
    parser.add_argument("--size", type=int, default=256, help="the simulated camera's frame side")
    args = parser.parse_args()

    from inference.robots import SIM_FACE
    from render.hardware.camera import SimulatedCamera
    from render.hardware.capture import CaptureSettings, capture_stimulus
    from render.hardware.simulated import NEUTRAL_FRAME, SimulatedRobot

    profile = SIM_FACE.to_dict()
    rest = np.array([a["rest"] for a in profile["actuators"]])
    names = [a["name"] for a in profile["actuators"]]
    frames = int(round(args.seconds * FPS))
    tail = int(np.ceil(CaptureSettings().tail_s * FPS - 1e-9))
    errors, overheads, stages_total = [], [], {}
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as scratch:
        scratch = Path(scratch)
        for i in range(args.captures):
            latency, jitter, camera_delay = GRID[i % len(GRID)]
            robot = SimulatedRobot(profile, latency_ms=latency, jitter_ms=jitter, seed=i)
            robot.connect()
            camera = SimulatedCamera(robot, fps=FPS, size=args.size, latency_ms=camera_delay, drop=0.02, noise=2.0,
                                     seed=100 + i)
            audio = scratch / f"speech{i}.wav"
            speech(audio, args.seconds, i)
            rng = np.random.default_rng(i)
            trajectory = np.tile(rest, (frames, 1))
            t = np.arange(frames) / FPS
            for name, amp in (("lower.jaw", 0.45), ("upper.brow_left", 0.3), ("head.pan", 0.15)):
                j = names.index(name)
                trajectory[:, j] = np.clip(rest[j] + amp * (1 + np.sin(2 * np.pi * rng.uniform(0.5, 2) * t)) / 2, 0, 1)
            stamps = {}

            def progress(stage, stamps=stamps):
                stamps[stage] = time.perf_counter()

            began = time.perf_counter()
            result = capture_stimulus(robot, camera, trajectory, FPS, audio, scratch / f"stimulus{i}.mp4",
                                      progress=progress)
            wall = time.perf_counter() - began
            start_at = result.play["start_at"]
            speech_frame = result.play["timeline_frames"] - frames - tail
            delays = [effective - (start_at + frame / FPS)
                      for (_sent, frame, _cmd), effective in zip(robot.sent_log, robot.effective_log)
                      if frame != NEUTRAL_FRAME and speech_frame <= frame < speech_frame + frames]
            truth = (start_at + speech_frame / FPS + float(np.mean(delays)) + camera_delay / 1000
                     - result.recording["started_at"])
            error_ms = (result.sync["v_start_s"] - truth) * 1000
            errors.append(error_ms)
            overheads.append(wall - args.seconds)
            order = ["recording", "synchronising", "encoding"]
            times = [stamps[s] for s in order] + [began + wall]
            for name, a, b in zip(order, times, times[1:]):
                stages_total[name] = stages_total.get(name, 0.0) + (b - a)
            print(f"capture {i + 1:2d}: latency {latency:3d} ms, jitter σ {jitter:2d} ms, camera {camera_delay:2d} ms → "
                  f"error {error_ms:+6.1f} ms, measured latency {result.sync['latency_ms']} ms, wall {wall:.2f} s "
                  f"(overhead {wall - args.seconds:.2f} s), dropped {result.sync['dropped']}", flush=True)
    errors = np.array(errors)
    summary = {
        "bench": "capture_sync", "captures": args.captures, "stimulus_s": args.seconds, "fps": FPS,
        "camera_size": args.size,
        "alignment_error_ms": {"mean": round(float(errors.mean()), 2), "sd": round(float(errors.std(ddof=1)), 2),
                               "max_abs": round(float(np.abs(errors).max()), 2),
                               "within_one_frame": int(np.sum(np.abs(errors) < 1000 / FPS))},
        "overhead_s": {"mean": round(float(np.mean(overheads)), 2), "max": round(float(np.max(overheads)), 2)},
        "stage_mean_s": {k: round(v / args.captures, 2) for k, v in stages_total.items()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
