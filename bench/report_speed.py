"""Benchmark of a full significance report: 100,000 ratings of 10 conditions by 500 participants (20
utterances, so 200 stimuli; a 7-point likert question, within participants), 10,000 bootstrap rounds,
figures, HTML, PDF, CSV tables and summary.json — the work of `manage.py report` / `analyze`.

    .venv/bin/python bench/report_speed.py [--participants 500] [--conditions 10] [--utterances 20] [--n-boot 10000]

Target (issue 5): ≤ 15 s on this machine. Runs in this process (after imports, which are reported
apart); prints the time of each stage; the last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalsite.settings")


def make_ratings(participants: int, conditions: int, utterances: int, seed: int = 0):
    """Every participant rates every condition × utterance once: a rating is a participant's level plus a
    condition effect plus noise, rounded onto 1..7; a few attention checks, one failed."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n = participants * conditions * utterances
    part = np.repeat(np.arange(participants), conditions * utterances)
    cond = np.tile(np.repeat(np.arange(conditions), utterances), participants)
    utt = np.tile(np.arange(utterances), participants * conditions)
    effect = np.linspace(0.8, -0.8, conditions)
    value = np.clip(np.round(4 + rng.normal(0, 0.6, participants)[part] + effect[cond] + rng.normal(0, 1.2, n)), 1, 7)
    names = np.array([f"condition-{i:02d}" for i in range(conditions)], dtype=object)
    frame = pd.DataFrame({
        "participant": np.char.add("p", part.astype(str)).astype(object), "condition": names[cond],
        "utterance": np.char.add("u", utt.astype(str)).astype(object),
        "stimulus": np.char.add(np.char.add("s", cond.astype(str)), np.char.add("-", utt.astype(str))).astype(object),
        "value": value, "question": "naturalness", "question_type": "likert", "scale_min": 1.0, "scale_max": 7.0,
        "answer_ms": rng.integers(900, 6000, n).astype(float), "watched_fraction": 1.0,
    })
    checks = pd.DataFrame({"participant": [f"p{i}" for i in range(participants)], "condition": "attention",
                           "value": [5.0] * (participants - 1) + [2.0], "expected": 5.0, "check": "attention",
                           "trial_kind": "attention", "question": "naturalness", "question_type": "likert",
                           "scale_min": 1.0, "scale_max": 7.0, "answer_ms": 3000.0, "watched_fraction": 1.0})
    return pd.concat([frame, checks], ignore_index=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=500)
    parser.add_argument("--conditions", type=int, default=10)
    parser.add_argument("--utterances", type=int, default=20)
    parser.add_argument("--n-boot", type=int, default=10_000)
    args = parser.parse_args()

    started = time.perf_counter()
    import django

    django.setup()
    from studies.analysis.run import run_analysis
    from studies.reports import write_report

    imported = time.perf_counter() - started
    df = make_ratings(args.participants, args.conditions, args.utterances)
    n_ratings = int((df["trial_kind"].isna() | (df["trial_kind"] != "attention")).sum())
    stages: dict[str, float] = {}
    last = [time.perf_counter(), "start"]

    def progress(stage: str, fraction: float) -> None:
        now = time.perf_counter()
        stages[last[1]] = stages.get(last[1], 0.0) + now - last[0]
        last[:] = [now, stage]

    with tempfile.TemporaryDirectory(prefix="report-bench-") as tmp:
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        last[0] = t0
        summary = run_analysis(df, design="within", settings={"n_boot": args.n_boot}, out_dir=tmp,
                               title="benchmark", source={"kind": "csv", "path": "generated"}, progress=progress)
        progress("write", 1.0)
        analysed = time.perf_counter() - t0
        files = write_report(summary, Path(tmp))
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        n_figures = len(list((Path(tmp) / "figures").glob("*.png")))
        pdf_kb = files["pdf"].stat().st_size / 1024
    stages.pop("start", None)
    stages.pop("done", None)
    excluded = len(summary["exclusions"]["excluded"])
    print(f"{n_ratings} ratings, {args.conditions} conditions, {args.participants} participants, "
          f"{args.n_boot} bootstrap rounds")
    print(f"  imports {imported:.2f} s (not counted)")
    for stage, seconds in stages.items():
        print(f"  {stage:<28} {seconds:6.2f} s")
    print(f"  analysis incl. figures    {analysed:6.2f} s")
    print(f"  report written (HTML, PDF {pdf_kb:.0f} kB, CSV, JSON) in {wall - analysed:.2f} s")
    print(f"  total                     {wall:6.2f} s wall, {cpu:.2f} s CPU; {n_figures} figures; "
          f"{excluded} participant(s) excluded")
    result = {"bench": "report_speed", "ratings": n_ratings, "conditions": args.conditions,
              "participants": args.participants, "n_boot": args.n_boot, "analysis_s": round(analysed, 2),
              "total_s": round(wall, 2), "cpu_s": round(cpu, 2), "figures": n_figures,
              "stages_s": {k: round(v, 2) for k, v in stages.items()}, "target_15s_met": wall <= 15.0}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
