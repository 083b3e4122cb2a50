"""Benchmark of the generator models on the synthetic demo corpus: training time of each demo-sized model,
inference time per 10 s utterance on one CPU core, and held-out objective metrics of every model against
the recorded (synthetic) motion and the random-alignment baseline.

    .venv/bin/python bench/models.py [--utterances 96] [--kinds separate,joint,...] [--out var/bench/models]

Targets (issue 3): training ≤ 3 min per model on CPU; inference ≤ 100 ms per 10 s utterance on one core
(Glow with one sample); every trained model beats random alignment on CCC of the lower face. The corpus is
SYNTHETIC (inference/synthetic.py): the numbers say that the models learn what the generator put in, not how
they would do on people. Prints a table per part; the last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / "var" / "cache" / "numba"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from inference import audio as audio_io  # noqa: E402
from inference.evaluation import Reference, evaluate  # noqa: E402
from inference.generate import generate, generate_many  # noqa: E402
from inference.importers import assign_split  # noqa: E402
from inference.motion import MotionClip  # noqa: E402
from inference.synthetic import make_corpus, speak  # noqa: E402
from inference.training import CorpusItem, load_checkpoint, train  # noqa: E402

GENERATORS = ["separate", "joint", "forked", "glow", "apc", "audio2landmark"]
TEN_SECONDS_TEXT = ("The committee met on a rainy Tuesday to discuss the plans for the new library, and after "
                    "a long debate they agreed to open it next spring.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=96)
    parser.add_argument("--kinds", default=",".join(GENERATORS + ["inverse"]))
    parser.add_argument("--out", default=str(ROOT / "var" / "bench" / "models"))
    parser.add_argument("--fresh", action="store_true", help="retrain even where a checkpoint exists")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    kinds = [k for k in args.kinds.split(",") if k]

    t0 = time.monotonic()
    rows = make_corpus(out / "corpus", n_utterances=args.utterances, seed=0)
    corpus_s = time.monotonic() - t0
    split = assign_split([(r["name"], r["speaker"]) for r in rows], by="utterance", ratios=(0.8, 0.1, 0.1), seed=0)
    items = [CorpusItem(r["name"], split[r["name"]], str(r["wav"]), str(r["motion"]), r["speaker"]) for r in rows]
    audio_s = sum(r["duration_s"] for r in rows)
    print(f"synthetic corpus: {len(rows)} utterances, {audio_s / 60:.1f} min of speech, made in {corpus_s:.1f} s; "
          f"split {sum(1 for i in items if i.split == 'train')}/{sum(1 for i in items if i.split == 'val')}/"
          f"{sum(1 for i in items if i.split == 'test')}")

    # --- training ---------------------------------------------------------------------------------------
    ckpt = {}
    train_s = {}
    epochs = {}
    for kind in kinds:
        path = out / f"{kind}.pt"
        if path.exists() and not args.fresh:
            loaded = load_checkpoint(path)
            train_s[kind] = sum(_stage_seconds(loaded.history))
        else:
            path.unlink(missing_ok=True)
            started = time.monotonic()
            if kind == "inverse":
                from inference.models.inverse import fit_inverse
                from inference.synthetic import robot_pairs

                commands, landmarks, channels = robot_pairs(4000, seed=0)
                loaded = fit_inverse(commands, landmarks, channels, path, robot="sim-face")
            else:
                init = out / "apc.pt" if kind == "audio2landmark" and (out / "apc.pt").exists() else None
                loaded = train(kind, items, path, cache_dir=out / "features", init_from=init)
            train_s[kind] = time.monotonic() - started
        ckpt[kind] = path
        epochs[kind] = len(loaded.history)
        print(f"train {kind:15s} {train_s[kind]:7.1f} s  {epochs[kind]:4d} epochs  "
              f"best val {min(h['best_val'] for h in loaded.history):.4f}")

    # --- inference per 10 s utterance on one core ---------------------------------------------------------
    ten = out / "ten_seconds.wav"
    if not ten.exists():
        speak(TEN_SECONDS_TEXT, ten, voice="en-us", words_per_minute=150)
    samples = audio_io.decode(ten)
    n10 = int(round(10.0 * 25))
    if len(samples) < 10 * audio_io.SAMPLE_RATE:  # repeat the sentence to reach exactly 10 s
        samples = np.tile(samples, int(np.ceil(10 * audio_io.SAMPLE_RATE / len(samples))))
    samples = samples[: 10 * audio_io.SAMPLE_RATE]
    infer_ms, total_ms = {}, {}
    for kind in kinds:
        if kind in ("apc",):
            continue
        loaded = load_checkpoint(ckpt[kind])
        if kind == "inverse":
            from inference.models.inverse import apply_inverse

            clip = MotionClip.load(items[0].motion_path)
            clip = MotionClip(fps=25, layout=clip.layout, values=np.resize(clip.values, (n10, clip.values.shape[1])),
                              channels=clip.channels, head_pose=np.resize(clip.head_pose, (n10, 6)))
            apply_inverse(loaded, clip)
            times = [_timed(lambda: apply_inverse(loaded, clip)) for _ in range(5)]
            infer_ms[kind] = total_ms[kind] = 1000 * statistics.median(times)
        else:
            from inference import features as feats

            x = loaded.feature_norm.apply(feats.extract(samples, loaded.feature_spec, n_frames=n10)).astype(np.float32)
            xb = torch.from_numpy(x[None])
            lengths = torch.tensor([n10])
            loaded.model.eval()

            def network():
                with torch.no_grad():
                    loaded.recipe.predict(loaded.model, loaded.config, xb, lengths, seeds=[0], temperature=None)

            network()
            infer_ms[kind] = 1000 * statistics.median(_timed(network) for _ in range(5))
            generate(loaded, samples)
            total_ms[kind] = 1000 * statistics.median(_timed(lambda: generate(loaded, samples)) for _ in range(3))
        print(f"infer {kind:15s} network {infer_ms[kind]:7.1f} ms   with features {total_ms[kind]:7.1f} ms  per 10 s")

    # --- held-out metrics ---------------------------------------------------------------------------------
    test = [i for i in items if i.split == "test"]
    refs = [Reference(i.name, MotionClip.load(i.motion_path), i.speaker, audio_io.decode(i.audio_path)) for i in test]
    generated, samples_by_model = {}, {}
    for kind in kinds:
        if kind in ("apc", "inverse"):
            continue
        clips = generate_many(ckpt[kind], [i.audio_path for i in test], n_frames=[r.clip.n_frames for r in refs],
                              cache_dir=out / "features")
        generated[kind] = {i.name: c for i, c in zip(test, clips)}
        if kind == "glow":
            samples_by_model[kind] = {i.name: [c] for i, c in zip(test, clips)}
            for seed in (1, 2):
                more = generate_many(ckpt[kind], [i.audio_path for i in test], seed=seed,
                                     n_frames=[r.clip.n_frames for r in refs], cache_dir=out / "features")
                for i, c in zip(test, more):
                    samples_by_model[kind][i.name].append(c)
    table = evaluate(generated, refs, seed=0, samples=samples_by_model)
    (out / "objective_metrics.md").write_text(table.to_markdown())
    table.to_csv(out / "objective_metrics.csv")
    print(table.to_markdown())
    lookup = {(r.model, r.region, r.metric): r.value for r in table.rows}
    lower = {m: lookup.get((m, "landmarks:lower", "ccc")) for m in list(generated) + ["random_alignment", "still"]}
    baseline = lower["random_alignment"]
    beats = {m: (v is not None and v > baseline) for m, v in lower.items() if m in generated}
    print("lower-face CCC (landmark space): " + ", ".join(f"{m} {v:.3f}" for m, v in lower.items() if v is not None))
    result = {
        "bench": "models", "utterances": len(rows), "test_utterances": len(test), "threads": 1,
        "train_s": {k: round(v, 1) for k, v in train_s.items()}, "epochs": epochs,
        "infer_ms_per_10s": {k: round(v, 1) for k, v in infer_ms.items()},
        "infer_with_features_ms_per_10s": {k: round(v, 1) for k, v in total_ms.items()},
        "lower_face_ccc": {k: round(v, 4) for k, v in lower.items() if v is not None},
        "beats_random_alignment": beats,
        "targets_met": {
            "train_le_180s": all(v <= 180 for v in train_s.values()),
            "infer_le_100ms": all(v <= 100 for v in infer_ms.values()),
            "all_beat_random_alignment": all(beats.values()),
        },
    }
    print(json.dumps(result))
    return 0


def _stage_seconds(history):
    """Training seconds recorded per stage (each stage's clock starts at zero)."""
    last = {}
    for h in history:
        last[h["stage"]] = h["seconds"]
    return last.values()


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
