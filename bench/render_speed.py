"""Benchmark of stimulus rendering: a 10 s clip at 512×512, 25 fps, rendered on the avatar and encoded with
its audio on one core, against the per-frame-new-renderer pattern of common talking-head repos (ratio in the
same run); peak memory of a render worker process; and a batch of stimuli spread over 1 and 2 worker
processes.

    .venv/bin/python bench/render_speed.py [--seconds 10] [--size 512] [--batch 40 --batch-seconds 2]

Each measurement runs in a fresh child process pinned to one core (`taskset`), with llvmpipe and BLAS on one
thread, so the figure is per core. Target (issue 4): ≥ 2× real time for the 10 s clip, judged on the median
of a worker's three stimuli after its first. Prints a table; the last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WARM = 3  # stimuli timed after a worker process's first
ONE_THREAD = {"LP_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "PYOPENGL_PLATFORM": os.environ.get("PYOPENGL_PLATFORM", "osmesa")}

CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from inference.layouts import ARKIT52
from inference.motion import MotionClip
from render.avatar import Avatar
from render.encode import encode_stimulus
from render.offscreen import RenderSettings, render_clip
from render.stimulus import make_stimulus

mode, seconds, size, out_dir, wav, count = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
supersample = int(sys.argv[7])
fps = 25
T = int(round(seconds * fps))
t = np.arange(T) / fps
values = np.zeros((T, 52), np.float32)
values[:, ARKIT52.index("jawOpen")] = 0.35 + 0.35 * np.sin(2 * np.pi * 2.3 * t)
values[:, ARKIT52.index("browInnerUp")] = 0.3 + 0.3 * np.sin(2 * np.pi * 0.4 * t)
values[:, ARKIT52.index("eyeBlinkLeft")] = values[:, ARKIT52.index("eyeBlinkRight")] = (t % 3.1 < 0.15)
pose = np.zeros((T, 6), np.float32)
pose[:, 1] = 8 * np.sin(2 * np.pi * 0.25 * t)
pose[:, 0] = 4 * np.sin(2 * np.pi * 0.6 * t)
clip = MotionClip(fps=fps, layout="arkit52", values=values, head_pose=pose)
settings = RenderSettings(width=size, height=size, supersample=supersample)
rig = Avatar()
rig.parts(rig.prepare(clip), 0)  # build the avatar's mesh (once per process) before the clock starts

def fresh_renderer_frames():
    # The pattern of many talking-head repos: a new OffscreenRenderer (and scene) for every frame.
    from render.offscreen import Renderer
    prepared = rig.prepare(clip)
    for i in range(prepared.n_frames):
        renderer = Renderer(settings)
        try:
            yield renderer.render(rig.parts(prepared, i), look_at=rig.look_at())
        finally:
            renderer.close()

started = time.perf_counter()
cpu = time.process_time()
walls = []
for k in range(count):
    out = os.path.join(out_dir, f"{{mode}}-{{os.getpid()}}-{{k}}.mp4")
    one = time.perf_counter()
    if mode == "reuse":
        make_stimulus(rig, clip, wav, out, settings=settings)
    else:
        encode_stimulus(fresh_renderer_frames(), wav, out, fps=fps, width=size, height=size)
    walls.append(time.perf_counter() - one)
wall = time.perf_counter() - started
print(json.dumps({{"wall_s": wall, "walls_s": walls, "cpu_s": time.process_time() - cpu, "frames": T * count,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def _speech(path: Path, seconds: float) -> None:
    """Speech of at least `seconds` (espeak-ng), the encoder cuts it to the clip."""
    text = ("The committee met on a rainy Tuesday to discuss the plans for the new library, and after a long "
            "debate they agreed to open it next spring, with a reading room for children.")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "140", "-w", str(path), text], check=True,
                   capture_output=True)


def _child(mode: str, seconds: float, size: int, out_dir: str, wav: str, count: int, core: int | None,
           supersample: int) -> dict:
    code = CHILD.format(root=str(ROOT))
    cmd = [sys.executable, "-c", code, mode, str(seconds), str(size), out_dir, wav, str(count), str(supersample)]
    if core is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(core)] + cmd
    result = subprocess.run(cmd, env={**os.environ, **ONE_THREAD}, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=40, help="stimuli in the batch scaling test (0: skip)")
    parser.add_argument("--batch-seconds", type=float, default=2.0, help="length of each batch stimulus")
    parser.add_argument("--supersample", type=int, default=2, help="RenderSettings.supersample (default 2, the "
                                                                   "platform's default; 1 = no anti-aliasing)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="render-bench-") as tmp:
        wav = Path(tmp) / "speech.wav"
        _speech(wav, args.seconds)
        # 1 + WARM stimuli in one worker process: the first pays for the OpenGL context, the shaders'
        # compilation and the meshes' upload; the median of the others is what a render worker sustains (a
        # median of three, as one run on a shared machine can be a tenth off either way).
        reuse = _child("reuse", args.seconds, args.size, tmp, str(wav), 1 + WARM, 0, args.supersample)
        fresh = _child("fresh", args.seconds, args.size, tmp, str(wav), 1, 0, args.supersample)
        first_s, warm_walls = reuse["walls_s"][0], reuse["walls_s"][1:]
        warm_s = statistics.median(warm_walls)
        frames = reuse["frames"] // (1 + WARM)
        rt_reuse = args.seconds / warm_s
        rt_first = args.seconds / first_s
        rt_fresh = args.seconds / fresh["wall_s"]
        print(f"{args.seconds:g} s clip at {args.size}x{args.size}, 25 fps, supersample {args.supersample}, "
              "rendered + encoded on one core:")
        print(f"  one renderer reused   {warm_s:7.1f} s  {frames / warm_s:6.1f} fps  "
              f"{rt_reuse:5.2f}x real time  (a worker's next stimuli, median of {WARM}: "
              f"{', '.join(f'{w:.2f}' for w in warm_walls)} s)  peak RSS {reuse['maxrss_mb']:.0f} MB")
        print(f"                        {first_s:7.1f} s  {frames / first_s:6.1f} fps  "
              f"{rt_first:5.2f}x real time  (its first: OpenGL context, shaders, meshes)")
        print(f"  new renderer / frame  {fresh['wall_s']:7.1f} s  {fresh['frames'] / fresh['wall_s']:6.1f} fps  "
              f"{rt_fresh:5.2f}x real time")
        print(f"  ratio reused / new per frame: {fresh['wall_s'] / warm_s:.2f}x (first stimulus: "
              f"{fresh['wall_s'] / first_s:.2f}x)")
        batch = {}
        if args.batch:
            for workers in (1, 2) if cores >= 2 else (1,):
                per = [args.batch // workers + (1 if i < args.batch % workers else 0) for i in range(workers)]
                started = time.perf_counter()
                procs = [subprocess.Popen(
                    (["taskset", "-c", str(i % cores)] if shutil.which("taskset") else []) +
                    [sys.executable, "-c", CHILD.format(root=str(ROOT)), "reuse", str(args.batch_seconds),
                     str(args.size), tmp, str(wav), str(n), str(args.supersample)],
                    env={**os.environ, **ONE_THREAD}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                    cwd=ROOT) for i, n in enumerate(per)]
                for p in procs:
                    out, err = p.communicate()
                    if p.returncode != 0:
                        raise SystemExit(f"batch worker failed:\n{err[-3000:]}")
                wall = time.perf_counter() - started
                batch[workers] = wall
                print(f"  batch of {args.batch} x {args.batch_seconds:g} s stimuli on {workers} worker process(es): "
                      f"{wall:.1f} s ({args.batch / wall:.2f} stimuli/s)")
    result = {"bench": "render_speed", "seconds": args.seconds, "size": args.size, "fps": 25,
              "supersample": args.supersample,
              "reuse_x_realtime": round(rt_reuse, 3), "reuse_walls_s": [round(w, 3) for w in warm_walls],
              "reuse_first_x_realtime": round(rt_first, 3),
              "fresh_x_realtime": round(rt_fresh, 3), "reuse_over_fresh": round(fresh["wall_s"] / warm_s, 3),
              "peak_rss_mb": round(reuse["maxrss_mb"], 1),
              "batch": {"stimuli": args.batch, "stimulus_s": args.batch_seconds,
                        "wall_s": {str(k): round(v, 1) for k, v in batch.items()},
                        "speedup_2_over_1": round(batch[1] / batch[2], 2) if 2 in batch else None},
              "target_2x_realtime_met": rt_reuse >= 2.0}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
