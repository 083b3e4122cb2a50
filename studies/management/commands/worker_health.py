"""`manage.py worker_health [--queue Q ...] [--this-host]` — ask the Celery workers over the broker (celery
inspect active_queues: one broadcast) whether they are alive and consuming the queues named; exit 0 if each queue
has at least one worker that answered, 1 otherwise, with what is missing and how to start it. The compose
file's worker healthchecks run it with --this-host (only the workers of this host count)."""
import json
import socket

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from evalsite.celery import QUEUES, app


class Command(BaseCommand):
    help = ("Check over the broker that Celery workers answer and consume the named queues (default: all of "
            f"{', '.join(QUEUES)}); exit status 1 when one is missing.")

    def add_arguments(self, parser):
        parser.add_argument("--queue", action="append", choices=QUEUES, dest="queues",
                            help="a queue that must have a worker (repeat; default every queue)")
        parser.add_argument("--this-host", action="store_true",
                            help="count only workers on this host (node names ending in @HOSTNAME)")
        parser.add_argument("--hostname", help="count only workers on this host name (default: this host's)")
        parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for replies (default 5)")
        parser.add_argument("--json", action="store_true", help="print the findings as one JSON object")

    def handle(self, *args, **opts):
        if settings.EMBEDDED_BROKER:
            raise CommandError("the embedded broker (filesystem://) cannot carry worker inspection; set "
                               "CELERY_BROKER_URL to Redis (redis://HOST:6379/0) for workers on other processes")
        wanted = opts["queues"] or list(QUEUES)
        host = opts["hostname"] or (socket.gethostname() if opts["this_host"] else None)
        inspect = app.control.inspect(timeout=opts["timeout"])
        try:
            queues = inspect.active_queues() or {}  # waits the whole timeout: a second inspect would double it
        except OSError as exc:
            raise CommandError(f"cannot reach the broker at {_public(settings.CELERY_BROKER_URL)}: {exc}") from None
        nodes = {node: sorted(q["name"] for q in consumed) for node, consumed in queues.items()
                 if host is None or node.rsplit("@", 1)[-1] == host}
        missing = [q for q in wanted if not any(q in consumed for consumed in nodes.values())]
        findings = {"ok": not missing, "missing": missing, "host": host,
                    "workers": {node: {"queues": consumed} for node, consumed in sorted(nodes.items())}}
        if opts["json"]:
            self.stdout.write(json.dumps(findings))
        else:
            for node, facts in findings["workers"].items():
                self.stdout.write(f"{node}: queues {', '.join(facts['queues'])}")
        if missing:
            where = f" on host {host}" if host else ""
            raise CommandError(
                f"no worker{where} answered within {opts['timeout']:g} s for queue(s) {', '.join(missing)} "
                f"(broker {_public(settings.CELERY_BROKER_URL)}); start one with "
                f"`celery -A evalsite worker -Q {','.join(missing)}`", returncode=1)


def _public(url: str) -> str:
    """The broker URL without its password."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
