"""`manage.py mturk ...` — run a study on Amazon Mechanical Turk: publish HITs, list and review the
assignments, pay bonuses, hide later HITs from past participants, show the account balance.

Every subcommand works on the sandbox unless given --live; publishing live also needs --yes. Failures end
with a one-line reason and a non-zero exit (MTurk's own error code and message when MTurk refused).
"""
from __future__ import annotations

from contextlib import contextmanager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)
from django.core.management.base import BaseCommand, CommandError

from studies.models import Study
from studies.recruiting import RecruitingError, mturk

CREDENTIALS_HINT = (
    "no AWS credentials for MTurk: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) "
    "in the environment"
)


@contextmanager
def mturk_errors():
    """Turn what boto3 and our layer raise into one-line CommandErrors."""
    try:
        yield
    except (NoCredentialsError, PartialCredentialsError):
        raise CommandError(CREDENTIALS_HINT) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise CommandError(
            f"MTurk refused {exc.operation_name}: {error.get('Code', 'Error')}: {error.get('Message', '').strip()}"
        ) from None
    except EndpointConnectionError as exc:
        raise CommandError(f"cannot reach MTurk ({exc}); check the network") from None
    except BotoCoreError as exc:
        raise CommandError(f"MTurk call failed: {exc}") from None
    except RecruitingError as exc:
        raise CommandError(str(exc)) from None


class Command(BaseCommand):
    help = "Publish a study on Amazon Mechanical Turk and review, pay and block its workers (sandbox unless --live)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        def with_marketplace(p):
            group = p.add_mutually_exclusive_group()
            group.add_argument("--sandbox", dest="live", action="store_false", default=False,
                               help="use the MTurk sandbox (the default; no money moves)")
            group.add_argument("--live", dest="live", action="store_true", help="use the live marketplace")
            return p

        p = with_marketplace(sub.add_parser("publish", help="create HITs that show the study's entry page"))
        p.add_argument("slug")
        p.add_argument("--assignments", type=int, required=True, help="how many workers in all")
        p.add_argument("--per-hit", type=int, default=mturk.DEFAULT_ASSIGNMENTS_PER_HIT,
                       help="assignments per HIT (default %(default)s: HITs of 10 or more pay 20%% more commission)")
        p.add_argument("--frame-height", type=int, default=800, help="height of the HIT frame in pixels (0 = window)")
        p.add_argument("--yes", action="store_true", help="confirm publishing on the live marketplace")

        p = with_marketplace(sub.add_parser("list", help="show the study's HITs and their assignments"))
        p.add_argument("slug")

        p = with_marketplace(sub.add_parser("review", help="decide each submitted assignment (approve/reject)"))
        p.add_argument("slug")
        p.add_argument("--apply", action="store_true", help="send the decisions to MTurk (default: only print them)")

        p = with_marketplace(sub.add_parser("bonus", help="pay a worker a bonus, once"))
        p.add_argument("slug")
        p.add_argument("--worker-id", required=True)
        p.add_argument("--assignment-id", required=True)
        p.add_argument("--amount", required=True, help="dollars, e.g. 0.50")
        p.add_argument("--reason", required=True, help="shown to the worker")
        p.add_argument("--again", action="store_true", help="send even though this assignment already had a bonus")

        p = with_marketplace(sub.add_parser("block-past", help="hide the study's later HITs from everyone who took part"))
        p.add_argument("slug")

        with_marketplace(sub.add_parser("balance", help="show the requester account's available balance"))

    def handle(self, *args, **opts):
        action = opts["action"]
        self.live = opts["live"]
        self.env = mturk.environment(not self.live)
        with mturk_errors():
            getattr(self, "do_" + action.replace("-", "_"))(opts)

    # ------------------------------------------------------------------------------------------ helpers
    def _study(self, slug: str) -> Study:
        study = Study.objects.filter(slug=slug).first()
        if study is None:
            raise CommandError(f"no study {slug!r}; load it first with `manage.py load_study FILE`")
        return study

    def _client(self):
        return mturk.make_client(sandbox=not self.live)

    def _hit_ids(self, study: Study) -> list[str]:
        hit_ids = mturk.recorded_hit_ids(study, sandbox=not self.live)
        if not hit_ids:
            flag = " --live" if self.live else ""
            raise CommandError(
                f"study {study.slug} has no HITs in the MTurk {self.env}; "
                f"publish first with `manage.py mturk publish {study.slug} --assignments N{flag}`"
            )
        return hit_ids

    # ----------------------------------------------------------------------------------------- actions
    def do_publish(self, opts):
        study = self._study(opts["slug"])
        sizes = mturk.split_assignments(opts["assignments"], opts["per_hit"])
        reward = mturk.money(study.current_version.spec["recruitment"]["reward_usd"])
        cost = mturk.estimated_cost(reward, sizes)
        if self.live and not opts["yes"]:
            raise CommandError(
                f"publishing on the live marketplace pays real money (about ${cost} for {opts['assignments']} "
                f"assignments at ${reward}); add --yes to confirm, or try --sandbox first"
            )
        client = self._client()
        if self.live:
            balance = mturk.account_balance(client)
            if balance < cost:
                raise CommandError(f"the account has ${balance}, less than the ${cost} these HITs cost; add funds first")
        if mturk.recorded_hit_ids(study, sandbox=not self.live):
            blocked = mturk.block_past_participants(client, study=study, sandbox=not self.live)
            self.stdout.write(f"earlier HITs: {len(blocked)} past worker(s) can no longer see this study's HITs")
        hits = mturk.publish_hits(client, study=study, assignments=opts["assignments"], sandbox=not self.live,
                                  per_hit=opts["per_hit"], frame_height=opts["frame_height"])
        for hit in hits:
            self.stdout.write(f"HIT {hit.hit_id}: {hit.assignments} assignment(s) at ${hit.reward}, "
                              f"expires {hit.expires_at or '?'}")
        if hits:
            self.stdout.write(f"workers see it at {hits[0].worker_url(self.env)}")
        self.stdout.write(f"published {len(hits)} HIT(s) in the MTurk {self.env}; estimated cost ${cost}")

    def do_list(self, opts):
        study = self._study(opts["slug"])
        hit_ids = self._hit_ids(study)
        client = self._client()
        for hit in mturk.describe_hits(client, hit_ids):
            self.stdout.write(
                f"HIT {hit.hit_id}  {hit.status:<12} of {hit.max_assignments}: {hit.completed} completed, "
                f"{hit.pending} pending, {hit.available} available; expires {hit.expires_at or '?'}"
            )
        assignments = mturk.list_assignments(client, hit_ids)
        self.stdout.write(f"{len(assignments)} assignment(s)")
        for a in assignments:
            submitted = a.submitted_at.isoformat(timespec="minutes") if a.submitted_at else "-"
            self.stdout.write(f"  {a.assignment_id}  worker {a.worker_id}  {a.status:<9}  submitted {submitted}  "
                              f"code {a.completion_code or '-'}")

    def do_review(self, opts):
        study = self._study(opts["slug"])
        client = self._client()
        assignments = mturk.list_assignments(client, self._hit_ids(study))
        decided = [(a, mturk.verify_assignment(study, a)) for a in assignments]
        self.stdout.write(f"{'assignment':<32} {'worker':<16} {'status':<9} {'decision':<8} {'rule':<18} feedback")
        for a, d in decided:
            self.stdout.write(f"{a.assignment_id:<32} {a.worker_id:<16} {a.status:<9} {d.action:<8} {d.rule:<18} "
                              f"{d.feedback}")
        counts = {action: sum(1 for _, d in decided if d.action == action)
                  for action in (mturk.APPROVE, mturk.REJECT, mturk.NONE)}
        summary = (f"{counts[mturk.APPROVE]} to approve, {counts[mturk.REJECT]} to reject, "
                   f"{counts[mturk.NONE]} already decided")
        if not opts["apply"]:
            self.stdout.write(f"{summary}. Nothing was sent; add --apply to send these decisions.")
            return
        failures = []
        for a, d in decided:
            try:
                with mturk_errors():
                    mturk.apply_decision(client, a, d)
            except CommandError as exc:
                failures.append(f"{a.assignment_id}: {exc}")
                self.stderr.write(f"{a.assignment_id}: {exc}")
        sent = counts[mturk.APPROVE] + counts[mturk.REJECT] - len(failures)
        self.stdout.write(f"{summary}; sent {sent} decision(s) to MTurk")
        if failures:
            raise CommandError(f"{len(failures)} decision(s) failed; the first: {failures[0]}")

    def do_bonus(self, opts):
        study = self._study(opts["slug"])
        record = mturk.bonus_pay(
            self._client(), study=study, worker_id=opts["worker_id"].strip(),
            assignment_id=opts["assignment_id"].strip(), amount=opts["amount"], reason=opts["reason"],
            sandbox=not self.live, again=opts["again"],
        )
        self.stdout.write(f"sent a ${record['amount']} bonus for assignment {record['assignment_id']} "
                          f"(request token {record['token']})")

    def do_block_past(self, opts):
        study = self._study(opts["slug"])
        self._hit_ids(study)
        workers = mturk.block_past_participants(self._client(), study=study, sandbox=not self.live)
        qualification = mturk.recorded(study, sandbox=not self.live)["qualification_type_id"]
        self.stdout.write(f"{len(workers)} worker(s) hold qualification {qualification}; "
                          f"this study's HITs are hidden from them")

    def do_balance(self, opts):
        balance = mturk.account_balance(self._client())
        self.stdout.write(f"available balance in the MTurk {self.env}: ${balance}")
