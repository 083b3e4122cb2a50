"""Server cost of each participant request, in process: CPU and wall milliseconds of Django's work per endpoint
(entry, form pages, trial page, video, answer with the watch facts) and PostgreSQL's CPU for each, with no HTTP
server or load in the way, so a change to one endpoint shows as its own figure.

It uses rating_throughput.py's database (`evalsite_bench`, rebuilt with --fresh) and study, then walks
--participants participants through every page with Django's test client, timing each request with
time.process_time (this process) and the PostgreSQL backend's CPU from /proc (10 ms ticks, so read the
per-request database figure as an average over many requests). Watching is not waited for: each trial is
marked shown 5 s earlier before its answer.

    .venv/bin/python bench/request_cost.py --fresh           # build the bench database first
    .venv/bin/python bench/request_cost.py --participants 20

The last line printed is one JSON object: per endpoint n, median wall and CPU ms, mean database CPU ms.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def backend_cpu_s(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--participants", type=int, default=10)
    p.add_argument("--fresh", action="store_true", help="drop and rebuild the bench database and corpus first")
    p.add_argument("--queries", action="store_true",
                   help="also print the SQL statements of one participant's second trial, per endpoint")
    p.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="PostgreSQL server URL (no db name)")
    args = p.parse_args()
    import rating_throughput as rt

    os.environ.update({"DATABASE_URL": f"{args.pg}/{rt.BENCH_DB}", "MEDIA_ROOT": str(ROOT / "var" / "bench" / "media"),
                       "DEBUG": "0", "DJANGO_SETTINGS_MODULE": "evalsite.settings", "LOG_LEVEL": "ERROR"})
    os.chdir(ROOT)
    if args.fresh:
        rt.recreate_database(args.pg)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from studies.models import Trial

    if args.fresh:
        call_command("migrate", verbosity=0)
        rt.build_corpus()
    study = rt.make_study(f"cost-{uuid.uuid4().hex[:6]}")
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        backend = cur.fetchone()[0]
    cost: dict[str, list[tuple[float, float, float]]] = {}
    shown: list[str] = []  # the statements of one trial, when --queries

    def timed(name, call):
        d0, t0, c0 = backend_cpu_s(backend), time.perf_counter(), time.process_time()
        capture = len(cost.get("answer", ())) == 1 and name in ("page", "video", "answer") and args.queries
        with CaptureQueriesContext(connection) if capture else contextlib.nullcontext() as queries:
            response = call()
            if getattr(response, "streaming", False):
                b"".join(response.streaming_content)
        if capture:
            shown.extend(f"{name:>7}: {q['sql'][:160]}" for q in queries.captured_queries)
        cost.setdefault(name, []).append(((time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000,
                                          (backend_cpu_s(backend) - d0) * 1000))
        return response

    c = Client(HTTP_HOST="127.0.0.1")  # one handler, its middleware loaded once, as in a server process
    for i in range(args.participants):
        c.cookies.clear()  # a new person
        r = timed("entry", lambda: c.get(f"/s/{study.public_token}/"))
        take = r["Location"].split("?")[0]
        for _ in range(500):
            html = timed("page", lambda: c.get(take)).content.decode()
            trial = re.search(r'data-trial="([^"]+)"', html)
            if trial is None:
                form = re.search(r'<form[^>]*action="([^"]+)"', html)
                if form is None:
                    break  # the completion page
                csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
                timed("form", lambda: c.post(form.group(1), {"agree": "yes", "csrfmiddlewaretoken": csrf.group(1)}))
                continue
            token = trial.group(1)
            for src in re.findall(r'src="(/v/[^"]+)"', html):
                timed("video", lambda: c.get(src, HTTP_RANGE="bytes=0-"))
            Trial.objects.filter(public_id=token).update(first_shown_at=timezone.now() - dt.timedelta(seconds=5))
            # As trial.js: the video's facts go with the answer (no watch request of their own).
            answer = {"trial": token, "submission_id": str(uuid.uuid4()), "answer_ms": 100,
                      "answers": [{"item": k, "value": 4} for k in ("upper", "middle", "lower")],
                      "watch": [{"slot": 0, "ended": True, "watched_fraction": 1.0}]}
            r = timed("answer", lambda: c.post(take + "answer/", json.dumps(answer), content_type="application/json"))
            if r.status_code != 201:
                raise SystemExit(f"answer refused: {r.status_code} {r.content[:200]!r}")
    figures = {name: {"n": len(v), "wall_ms": round(statistics.median(x[0] for x in v), 2),
                      "cpu_ms": round(statistics.median(x[1] for x in v), 2),
                      "db_cpu_ms": round(statistics.mean(x[2] for x in v), 2)} for name, v in cost.items()}
    for name, f in figures.items():
        print(f"{name:>7}: n {f['n']:>4}  wall {f['wall_ms']:6.2f} ms  cpu {f['cpu_ms']:6.2f} ms  "
              f"postgres cpu {f['db_cpu_ms']:5.2f} ms")
    if shown:
        print(f"the statements of one trial ({len(shown)}):", *shown, sep="\n  ")
    trial_cpu = sum(figures[k]["cpu_ms"] + figures[k]["db_cpu_ms"] for k in ("page", "video", "answer"))
    print(f"one trial (page, video, answer with the watch facts), Django + PostgreSQL CPU: {trial_cpu:.1f} ms")
    print(json.dumps({"bench": "request_cost", "participants": args.participants, "endpoints": figures,
                      "trial_cpu_ms": round(trial_cpu, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
