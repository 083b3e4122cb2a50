"""`manage.py run_bots SLUG --n N --behaviour attentive|careless|speeder` (or `--mix attentive=8,careless=3`
for a crowd of several kinds at once) — simulated participants take a live study over real HTTP, page by page (studies/bots.py), then the database is read back: how many
completed, which quality rules excluded them, and whether every acknowledged answer is stored exactly once.

Without --base-url (or with --serve) a gunicorn server is started on a free 127.0.0.1 port against the
same database and stopped afterwards. Bot sessions (source "bot") are not data, as pilots are not: they fill
no quota, take no real participant's cell (bots are balanced among themselves), and exports and reports leave
them out unless asked for (`--include-pilot`).
"""
from collections import Counter

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from studies import bots, services
from studies.models import Exclusion, Participant, Study


class Command(BaseCommand):
    help = "Run simulated participants (bots) through a live study over HTTP and report what they did."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the study's slug")
        parser.add_argument("--n", dest="n", type=int, default=1, help="how many bots (default 1)")
        parser.add_argument("--behaviour", dest="behaviour", choices=sorted(bots.BEHAVIOURS), default="attentive",
                            help="attentive, careless (straight-lines, ignores attention checks) or speeder")
        parser.add_argument("--mix", default=None, metavar="KIND=N,...",
                            help="several kinds at once instead of --n/--behaviour, e.g. attentive=8,careless=3")
        parser.add_argument("--base-url", dest="base_url", default=None,
                            help="a running server, e.g. http://127.0.0.1:8000 (default: start one)")
        parser.add_argument("--serve", dest="serve", action="store_true",
                            help="start a gunicorn server on a free 127.0.0.1 port for the run (the default "
                                 "without --base-url)")
        parser.add_argument("--concurrency", type=int, default=None,
                            help="bots at a time (default: all of them, at most 50)")
        parser.add_argument("--lose-responses", type=float, default=0.0, metavar="P",
                            help="chance that a bot resends an acknowledged answer as if its response was lost")
        parser.add_argument("--workers", type=int, default=2, help="gunicorn workers when serving (default 2)")
        parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker (default 4)")

    def handle(self, *args, **opts):
        slug = opts["slug"]
        mix = _mix(opts["mix"]) if opts["mix"] else [(opts["behaviour"], opts["n"])]
        n = sum(count for _, count in mix)
        behaviour = ", ".join(f"{count} {kind}" for kind, count in mix) if opts["mix"] else opts["behaviour"]
        study = Study.objects.filter(slug=slug).first()
        if study is None:
            known = ", ".join(Study.objects.order_by("slug").values_list("slug", flat=True)[:10]) or "none yet"
            raise CommandError(f"no study with slug {slug!r} (studies: {known})")
        if study.status != Study.Status.LIVE:
            raise CommandError(f"study {slug!r} is {study.status}, not live; open it first "
                               f"(`manage.py load_study FILE --open` or the researcher page)")
        if n < 1 or any(count < 1 for _, count in mix):
            raise CommandError("--n must be at least 1" if not opts["mix"] else "each count in --mix must be at least 1")
        if not 0.0 <= opts["lose_responses"] <= 1.0:
            raise CommandError("--lose-responses is a probability between 0 and 1")
        concurrency = opts["concurrency"] or min(n, 50)
        if concurrency < 1:
            raise CommandError("--concurrency must be at least 1")

        if opts["serve"] or not opts["base_url"]:
            server = bots.LocalServer(workers=opts["workers"], threads=opts["threads"])
            try:
                with server:
                    summary, bot_ids = self._run(study, server.base_url, mix, behaviour, concurrency, opts)
            except RuntimeError as exc:
                raise CommandError(f"could not serve the site: {exc}") from None
            if server.exited_early is not None:
                self.stderr.write(f"the server stopped during the run (exit status {server.exited_early})")
        else:
            summary, bot_ids = self._run(study, opts["base_url"], mix, behaviour, concurrency, opts)
        self._report(study, summary, bot_ids)

    def _run(self, study, base_url, mix, behaviour, concurrency, opts):
        target = bots.study_target(study, base_url)
        crowd = [bot for kind, count in mix
                 for bot in bots.make_bots(target, n=count, behaviour=kind, lose_responses=opts["lose_responses"])]
        n = len(crowd)
        bar = tqdm(total=n, desc=f"{behaviour} bots", unit="bot", disable=None)
        outcomes = Counter()

        def finished(result):
            outcomes[result.outcome] += 1
            bar.update(1)
            bar.set_postfix(outcomes, refresh=False)

        try:
            summary = bots.run_bots(crowd, concurrency=concurrency, on_finish=finished)
        finally:
            bar.close()
        self.stdout.write(f"{n} bot(s) ({behaviour}) took {study.slug} at {base_url} in {summary.wall_s:.1f} s")
        return summary, [b.bot_id for b in crowd]

    def _report(self, study, summary, bot_ids):
        facts = summary.as_dict()
        hashes = [services.external_id_hash(Participant.Source.BOT, bot_id) for bot_id in bot_ids]
        sessions = Participant.objects.filter(study=study, external_id_hash__in=hashes)
        statuses = Counter(sessions.values_list("status", flat=True))
        excluded = Exclusion.objects.filter(participant__in=sessions)
        by_rule = Counter(excluded.values_list("rule", flat=True))
        n_excluded = excluded.values("participant").distinct().count()
        check = bots.submissions_verify(summary.submissions)
        lat = facts["latency_ms"]
        out = self.stdout.write
        out(f"  bots: completed {facts['completed']}, screened out {facts['screened_out']}, "
            f"unavailable {facts['unavailable']}, errors {facts['errors']}")
        out("  sessions in the database: " + (", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) or "none"))
        for reason, count in facts["unavailable_reasons"].items():
            out(f"  turned away ({count}): {reason}")
        rules = ", ".join(f"{rule} {count}" for rule, count in sorted(by_rule.items())) or "none"
        out(f"  excluded by quality rules: {n_excluded} of {statuses.get('completed', 0)} completed (by rule: {rules})")
        out(f"  answer submissions acknowledged {check['acknowledged']} ({check['rows_acknowledged']} ratings), "
            f"in the database {check['rows_in_db']} ratings; lost {check['lost']}, duplicates {check['duplicates']}")
        for problem, count in facts["problems"].items():
            out(f"  noticed by {count} bot(s): {problem}")
        out("  latency ms p50/p99: " + ", ".join(
            f"{name} {s['p50']:.0f}/{s['p99']:.0f}" for name, s in lat.items()))
        if check["lost"] or check["duplicates"]:
            raise CommandError(f"{check['lost']} acknowledged submission(s) lost, {check['duplicates']} duplicate row(s)")
        if facts["errors"]:
            reason = next(iter(facts["error_reasons"]), "unknown")
            raise CommandError(f"{facts['errors']} of {len(bot_ids)} bot(s) failed; first reason: {reason}")


def _mix(text: str) -> list[tuple[str, int]]:
    """`attentive=8,careless=3` -> [("attentive", 8), ("careless", 3)], with a clear error when malformed."""
    mix = []
    for part in text.split(","):
        kind, _, count = part.strip().partition("=")
        if kind not in bots.BEHAVIOURS or not count.strip().isdecimal():
            raise CommandError(f"--mix: {part.strip()!r} is not KIND=N; kinds: {', '.join(sorted(bots.BEHAVIOURS))}, "
                               "e.g. --mix attentive=8,careless=3")
        mix.append((kind, int(count)))
    return mix
