"""Rating throughput: N concurrent bot participants rate very short clips through gunicorn + PostgreSQL + Redis.

It recreates its own database (`evalsite_bench`: dropped and made again), migrates, builds a corpus of
one-word placeholder clips (~0.5-0.6 s, so the bench measures the server, not the watching) and a
likert-only study (three items per clip, as the MSP naturalness study rates upper, middle and lower face),
then for each run starts gunicorn (settings as deployed: the rate limits' counters in Redis), runs N
attentive bots at once over real HTTP (studies/bots.py: entry, consent, instructions, every trial page,
every video, the answer with the videos' watch facts), stops the server and reads the database back.

Two kinds of run:
- capacity, for each N of --n: a closed loop; bots watch every clip to its end and answer as soon as the
  answers unlock, so they offer as much load as the server takes. Latency there is queueing: with N bots
  and no pause, N / throughput is spent waiting whatever the server's speed.
- the target run (N = 200, --pace-s 1.8): each bot takes at least 1.8 s per trial from its page to its answer,
  as a crowd working at a steady pace; 200 of them offer a little more than the target's load (at most 333
  ratings/s; the requests' own latency makes each trial a little longer). Met when the server delivers at
  least 300 ratings/s with answer p99 under 250 ms while all 200 are rating (both over the same stretch);
  the whole run's p99, which adds the arrivals' burst (200 entries, consents and instructions within
  --ramp-s), is reported beside it.

Figures per run:
- trial submissions/s and ratings/s (three per trial) over the whole run (first to last acknowledgement),
  and steady: while every bot is rating (from the last bot's first answer to the first bot's last);
- p50/p99 latency of the answer and page requests (every request, retries included), and of the
  answers acknowledged while every bot is rating;
- lost (acknowledged but missing in the database) and duplicates (rows beyond one per answer), which must
  both be zero; errors (bots that could not finish) and 5xx/network failures;
- CPU seconds of gunicorn, the bots, PostgreSQL and Redis, and per trial: the machine's two cores are
  shared by all four, which bounds what any server code can do here.

    .venv/bin/python bench/rating_throughput.py                     # capacity at N = 50 200 500, then the target run
    .venv/bin/python bench/rating_throughput.py --n 200 --pace-s 0  # one capacity run, no target run
    .venv/bin/python bench/rating_throughput.py --n --timeline      # the target run alone, second by second

The last line printed is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
import wave
from collections import Counter
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "evalsite_bench"
WORDS = ["yes", "no", "hello", "okay", "good", "nice", "right", "great", "fine", "sure", "sorry", "maybe"]
SPEECH_WPM = 200  # espeak-ng at 200 words per minute says one of these words in about half a second
CONDITIONS = [("ground_truth", "ground_truth"), ("random_alignment", "random_alignment"), ("still", "still")]
TARGET = {"n": 200, "ratings_per_s": 300, "p99_ms": 250}

STUDY_YAML = """\
slug: {slug}
title: Rating throughput bench
stimuli:
  corpus: bench
  conditions: [ground_truth, random_alignment, still]
  allow_placeholders: true
questions:
  naturalness:
    type: likert
    prompt: How natural is the motion of this face?
    points: 7
    labels: [Very unnatural, Very natural]
    items:
      - {{key: upper, text: "Upper face: how natural is its motion?"}}
      - {{key: middle, text: "Middle face: how natural is its motion?"}}
      - {{key: lower, text: "Lower face: how natural is its motion?"}}
pages:
  - type: consent
  - type: instructions
  - type: trials
    question: naturalness
    attention_checks: 0
  - type: completion
recruitment:
  quota: 100000
"""


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="*", default=[50, 200, 500],
                   help="concurrent participants per capacity run (none: the target run only)")
    # One worker more than the 2 cores keeps both busy while a worker's threads wait on the GIL or the
    # database; 3 x 4 beat 2 x 8 in paired runs at N=200 here (22-27 vs 16-20 trial submissions/s).
    p.add_argument("--workers", type=int, default=3, help="gunicorn workers (default 3)")
    p.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker (default 4)")
    p.add_argument("--think-ms", type=int, nargs=2, default=[0, 0], metavar=("LO", "HI"),
                   help="capacity runs: bots' pause before answering, in ms (default 0 0: answer at once)")
    p.add_argument("--pace-s", type=float, default=1.8,
                   help="the target run: seconds per trial for each of its 200 bots (0: no target run)")
    p.add_argument("--ramp-s", type=float, default=5.0, help="spread the bots' arrivals over this many seconds")
    p.add_argument("--lose-responses", type=float, default=0.02,
                   help="share of acknowledged answers a bot resends as if the response were lost (default 0.02)")
    p.add_argument("--timeline", action="store_true",
                   help="print each run second by second: answers acknowledged, answer p50/p99, other requests")
    p.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="PostgreSQL server URL (no db name)")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/13", help="Redis for the server's cache (rate limits)")
    return p.parse_args()


def recreate_database(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(f"{pg_url}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")


def build_corpus() -> None:
    """The bench corpus: one-word utterances, each as ground truth, random alignment and still."""
    from django.conf import settings

    from render import placeholder
    from studies import tasks
    from studies.models import Condition, Corpus, Utterance

    corpus, _ = Corpus.objects.get_or_create(name="bench", defaults={"description": "one-word clips for benchmarks"})
    conditions = [Condition.objects.get_or_create(name=name, defaults={"kind": kind})[0] for name, kind in CONDITIONS]
    utterances = []
    for i, word in enumerate(WORDS):
        rel = f"corpora/bench/{word}.wav"
        path = Path(settings.MEDIA_ROOT) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        voice = ("en-us", "en-gb")[i % 2]
        if not path.exists():
            placeholder.speak(word, path, voice=voice, words_per_minute=SPEECH_WPM)
        with wave.open(str(path)) as w:
            duration = w.getnframes() / w.getframerate()
        utt, _ = Utterance.objects.get_or_create(
            corpus=corpus, name=f"w{i:02d}-{word}",
            defaults={"speaker": f"spk-{'ab'[i % 2]}", "transcript": word, "audio_path": rel, "duration_s": duration,
                      "metadata": {"role": "speech", "voice": voice}},
        )
        utterances.append(utt)
    for utt in utterances:
        for cond in conditions:
            tasks.render_placeholder_stimulus.apply(args=(utt.pk, cond.pk, "avatar", 2000 + utt.pk), throw=True)


def make_study(slug: str):
    from studies import services

    version, _ = services.study_load(text=STUDY_YAML.format(slug=slug))
    services.study_set_status(study=version.study, status="live")
    return version.study


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def service_cpu_s(names: tuple[str, ...]) -> float:
    """CPU seconds used so far by the processes with these names (PostgreSQL, Redis), ended children
    included (a backend that exits adds its time to the postmaster's), read from /proc; 0 where there is none."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        comm = text[text.index("(") + 1:text.rindex(")")]
        if comm in names:
            fields = text[text.rindex(")") + 2:].split()
            total += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return total / tick


def steady_window(submissions) -> tuple[float, float] | None:
    """(start, end) while every bot was rating: from the last bot's first acknowledged answer to the first
    bot's last (time.perf_counter); None when no such stretch of a second exists (arrivals slower than sessions)."""
    first, last = {}, {}
    for s in submissions:
        first[s.bot_id] = min(first.get(s.bot_id, s.at), s.at)
        last[s.bot_id] = max(last.get(s.bot_id, s.at), s.at)
    if not first:
        return None
    start, end = max(first.values()), min(last.values())
    return (start, end) if end - start >= 1.0 else None


def steady_rate(submissions, window) -> float:
    """Trial submissions/s inside the steady window (nan without one)."""
    if window is None:
        return float("nan")
    start, end = window
    return sum(1 for s in submissions if start < s.at <= end) / (end - start)


def percentile_ms(seconds: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of these latencies in ms; None for none."""
    if not seconds:
        return None
    ordered = sorted(seconds)
    return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))] * 1000, 1)


def print_timeline(calls, window, step_s: float = 2.0) -> None:
    """Per step_s of the run: answers completed, their p50/p99, and the other requests completed."""
    if not calls:
        return
    t0 = min(c.at for c in calls)
    buckets: dict[int, list] = {}
    for c in calls:
        buckets.setdefault(int((c.at - t0) // step_s), []).append(c)
    steady = (window[0] - t0, window[1] - t0) if window else None
    for k in sorted(buckets):
        answers = [c.seconds for c in buckets[k] if c.endpoint == "answer"]
        others = Counter(c.endpoint for c in buckets[k] if c.endpoint != "answer")
        mark = "*" if steady and steady[0] <= k * step_s and (k + 1) * step_s <= steady[1] else " "
        print(f"   {mark}{k * step_s:6.0f} s  answers {len(answers):4d}  p50 {percentile_ms(answers, 50)} ms  "
              f"p99 {percentile_ms(answers, 99)} ms  | {dict(others)}", flush=True)


def run_one(n: int, args, log_path: Path, *, pace_s: float = 0.0) -> dict:
    from studies import bots
    from studies.models import Response, Trial

    study = make_study(f"bench-n{n}-{'paced' if pace_s else 'closed'}")
    think = (0, 0) if pace_s else tuple(args.think_ms)
    behaviour = replace(bots.ATTENTIVE, think_ms=think, pace_s=pace_s)
    # As deployed (docker/compose.yml): the rate limits' counters in Redis, shared by the workers (LocalServer
    # leaves out the per-address limit on new sessions: every bot comes from 127.0.0.1).
    server_env = {"DEBUG": "0", "DB_CONN_MAX_AGE": "60", "LOG_LEVEL": "ERROR", "CACHE_URL": args.redis}
    cpu_children, cpu_self = children_cpu_s(), self_cpu_s()
    cpu_db, cpu_redis = service_cpu_s(("postgres",)), service_cpu_s(("redis-server",))
    server = bots.LocalServer(workers=args.workers, threads=args.threads, env=server_env, log_path=log_path,
                              log_level="info")
    with server:
        # In by the study's plain link, as real participants: their cell choice and quota count are measured.
        target = replace(bots.study_target(study, server.base_url), declared=False)
        crowd = bots.make_bots(target, n=n, behaviour=behaviour, prefix=f"bench-{n}",
                               lose_responses=args.lose_responses, ramp_s=args.ramp_s, timeout_s=120)
        summary = bots.run_bots(crowd, concurrency=n)
    server_cpu = children_cpu_s() - cpu_children  # gunicorn and its workers, reaped when it stopped
    client_cpu = self_cpu_s() - cpu_self
    time.sleep(0.5)  # the database's backends end once gunicorn is gone; their time goes to the postmaster
    db_cpu = service_cpu_s(("postgres",)) - cpu_db
    redis_cpu = service_cpu_s(("redis-server",)) - cpu_redis
    facts = summary.as_dict()
    first = [s for s in summary.submissions if not s.resent]
    stamps = sorted(s.at for s in first)
    span = (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    window = steady_window(first)
    steady, steady_s = steady_rate(first, window), (window[1] - window[0] if window else 0.0)
    # The answers completed inside the steady window: the latency of a crowd at full strength, without the
    # arrivals' burst of entry and consent pages before it.
    steady_answers = [c.seconds for c in summary.calls() if c.endpoint == "answer" and window
                      and window[0] < c.at <= window[1]]
    check = bots.submissions_verify(summary.submissions)
    answered_in_db = Trial.objects.filter(participant__study=study, answered_at__isnull=False).count()
    rows_in_db = Response.objects.filter(participant__study=study).count()
    if args.timeline:
        print_timeline(summary.calls(), window)
    lat = facts["latency_ms"]
    failed = sum(v["failed"] for v in lat.values())
    failures = Counter(f"{c.endpoint}: {c.status or c.error}" for c in summary.calls()
                       if c.status is None or c.status >= 500)
    per_trial = sum(s.answers for s in first) / max(1, len(first))
    return {
        "n": n,
        "pace_s": pace_s,
        "think_ms": list(think),
        "server_exited_during_run": server.exited_early,
        "completed": facts["completed"],
        "errors": facts["errors"],
        "error_reasons": facts["error_reasons"],
        "failed_requests": failed,
        "failures": dict(failures),  # request failures by endpoint and status or network error (all retried)
        "trial_submissions": len(first),
        "ratings": sum(s.answers for s in first),
        "resent_submissions": facts["resent_submissions"],
        "window_s": round(span, 2),
        "wall_s": facts["wall_s"],
        "trial_submissions_per_s": round(len(first) / span, 1),
        "ratings_per_s": round(sum(s.answers for s in first) / span, 1),
        "steady_s": round(steady_s, 1),
        "steady_trial_submissions_per_s": round(steady, 1),
        "steady_ratings_per_s": round(steady * per_trial, 1),
        "answer_p50_ms": lat["answer"]["p50"],
        "answer_p99_ms": lat["answer"]["p99"],
        "steady_answer_p50_ms": percentile_ms(steady_answers, 50),
        "steady_answer_p99_ms": percentile_ms(steady_answers, 99),
        "page_p50_ms": lat["page"]["p50"],
        "page_p99_ms": lat["page"]["p99"],
        "entry_p99_ms": lat["entry"]["p99"],
        "requests_per_s": round(sum(v["n"] for v in lat.values()) / facts["wall_s"], 1),
        "lost": check["lost"],
        "duplicates": check["duplicates"],
        "unacknowledged": check["unacknowledged"],
        "db_answered_trials": answered_in_db,
        "db_rating_rows": rows_in_db,
        "server_cpu_s": round(server_cpu, 1),
        "client_cpu_s": round(client_cpu, 1),
        "db_cpu_s": round(db_cpu, 1),
        "redis_cpu_s": round(redis_cpu, 1),
        "server_cpu_ms_per_trial": round(server_cpu * 1000 / max(1, len(first)), 1),
        "all_cpu_ms_per_trial": round((server_cpu + client_cpu + db_cpu + redis_cpu) * 1000 / max(1, len(first)), 1),
    }


def main() -> int:
    args = parse_args()
    bench_var = ROOT / "var" / "bench"
    bench_var.mkdir(parents=True, exist_ok=True)
    os.environ.update({
        "DATABASE_URL": f"{args.pg}/{BENCH_DB}",
        "MEDIA_ROOT": str(bench_var / "media"),
        "DEBUG": "0",
        "DJANGO_SETTINGS_MODULE": "evalsite.settings",
    })
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    recreate_database(args.pg)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    t0 = time.perf_counter()
    build_corpus()
    print(f"bench corpus ready in {time.perf_counter() - t0:.1f} s; gunicorn {args.workers} workers x "
          f"{args.threads} threads (gthread), PostgreSQL, Redis, CONN_MAX_AGE 60; {os.cpu_count()} cores shared "
          f"by server, database and bots", flush=True)
    from studies.models import Stimulus

    durations = sorted(Stimulus.objects.filter(utterance__corpus__name="bench").values_list("duration_s", flat=True))
    print(f"clips: {len(durations)}, {durations[0]:.2f}-{durations[-1]:.2f} s", flush=True)

    runs = [(n, 0.0) for n in args.n] + ([(TARGET["n"], args.pace_s)] if args.pace_s else [])
    results = []
    for n, pace_s in runs:
        r = run_one(n, args, bench_var / "gunicorn.log", pace_s=pace_s)
        results.append(r)
        how = f"paced {pace_s} s/trial" if pace_s else "closed loop"
        print(
            f"N={n:>4} {how}: {r['trial_submissions_per_s']:>6.1f} trial submissions/s ({r['ratings_per_s']:.1f} "
            f"ratings/s) over {r['window_s']} s, steady {r['steady_ratings_per_s']} ratings/s over {r['steady_s']} s | "
            f"answer POST p50 {r['answer_p50_ms']} ms p99 {r['answer_p99_ms']} ms (while all rate: p50 "
            f"{r['steady_answer_p50_ms']} ms p99 {r['steady_answer_p99_ms']} ms) | "
            f"page GET p99 {r['page_p99_ms']} ms | "
            f"lost {r['lost']} duplicates {r['duplicates']} | completed {r['completed']}/{n} errors {r['errors']} "
            f"failed requests {r['failed_requests']} | cpu s server {r['server_cpu_s']} bots {r['client_cpu_s']} "
            f"postgres {r['db_cpu_s']} redis {r['redis_cpu_s']} (ms per trial: server {r['server_cpu_ms_per_trial']}, "
            f"all {r['all_cpu_ms_per_trial']})",
            flush=True,
        )
        if r["failures"]:
            print(f"        failed requests (retried): {r['failures']}", flush=True)
        if r["error_reasons"]:
            print(f"        errors: {r['error_reasons']}", flush=True)
        if r["server_exited_during_run"] is not None:
            print(f"        gunicorn was gone before the run ended (exit status {r['server_exited_during_run']}); "
                  f"see {bench_var / 'gunicorn.log'}", flush=True)
    at_target = next((r for r in results if r["pace_s"]), None)
    verdict = verdict_whole = None
    if at_target:
        # Judged while all 200 rate (rate and latency over the same stretch); the whole run's p99 adds the
        # arrivals' burst (200 entries, consents and instructions within --ramp-s) and is reported beside it.
        rate_ok = at_target["steady_ratings_per_s"] >= TARGET["ratings_per_s"] and at_target["errors"] == 0
        steady_p99 = at_target["steady_answer_p99_ms"]
        verdict = rate_ok and steady_p99 is not None and steady_p99 < TARGET["p99_ms"]
        verdict_whole = rate_ok and at_target["answer_p99_ms"] < TARGET["p99_ms"]
        print(f"target (N={TARGET['n']}: >= {TARGET['ratings_per_s']} ratings/s with answer p99 < {TARGET['p99_ms']} ms "
              f"while all rate): {'met' if verdict else 'missed'} ({at_target['steady_ratings_per_s']} ratings/s, "
              f"p99 {steady_p99} ms); with the arrivals' burst counted (answer p99 over the whole run, "
              f"{at_target['answer_p99_ms']} ms): {'met' if verdict_whole else 'missed'}")
    ok = all(r["lost"] == 0 and r["duplicates"] == 0 for r in results)
    print(json.dumps({
        "bench": "rating_throughput",
        "server": {"workers": args.workers, "threads": args.threads, "worker_class": "gthread", "db": "postgresql"},
        "ratings_per_trial": 3,
        "target": TARGET,
        "target_met": verdict,
        "target_met_whole_run": verdict_whole,
        "no_loss_no_duplicates": ok,
        "runs": results,
    }))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
