"""`manage.py demo` — the whole loop on a SYNTHETIC corpus, then serve the site on 127.0.0.1.

Stages (studies/demo_pipeline.py): corpus, the seed papers' models trained at demo size, objective metrics,
the study (ground truth, random alignment, separate, joint, Glow and still, on the avatar and the simulated
robot; Likert per face region, a MUSHRA-style page, a pairwise page), rendering, attentive and careless bots,
the significance report, the stimulus bundle. Everything already made is reused, so a second run goes
straight to serving. `--quick` is the small version the tests run; `--no-serve` stops after preparing.
"""
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse

from studies.demo_pipeline import PLANS, DemoPipeline
from studies.models import Study

RESEARCHER = "researcher"


def researcher_password() -> str:
    """The demo researcher's password: made once per machine, kept in var/ so every run prints the same."""
    path = Path(settings.VAR_DIR) / "demo-researcher-password.txt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(12))
        path.chmod(0o600)
    return path.read_text().strip()


class Command(BaseCommand):
    help = ("Run the whole loop on a synthetic corpus (models, metrics, rendered stimuli, a study, bots, report, "
            "bundle) and serve the site at http://127.0.0.1:8000; a second run reuses what is made.")

    def add_arguments(self, parser):
        parser.add_argument("--quick", action="store_true",
                            help="a small version: 20 utterances, a few epochs, 96x96 clips, avatar only, 2 bots")
        parser.add_argument("--no-serve", action="store_true", help="prepare only; do not start the server")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, **opts):
        started = time.perf_counter()
        Path(settings.VAR_DIR).mkdir(parents=True, exist_ok=True)
        call_command("migrate", verbosity=0)
        password = researcher_password()
        User = get_user_model()
        user = User.objects.filter(username=RESEARCHER).first()
        if user is None:
            user = User.objects.create_superuser(RESEARCHER, "researcher@example.org", password)
        elif not user.check_password(password):
            user.set_password(password)
            user.save()

        plan = PLANS["quick" if opts["quick"] else "full"]
        pipeline = DemoPipeline(plan, owner=user, say=lambda text: self.stdout.write(self.style.MIGRATE_HEADING(text)))
        try:
            result = pipeline.run()
        except CommandError:
            raise
        except Exception as exc:  # a stage's own command already said what went wrong; add where it stopped
            raise CommandError(f"the demo stopped: {type(exc).__name__}: {exc}") from exc
        study = Study.objects.get(slug=result.study_slug)
        base = f"http://127.0.0.1:{opts['port']}"
        made = [stage for stage in result.timings if stage not in result.skipped]
        lines = [
            "",
            f"Demo study ready: {study.title}  ({time.perf_counter() - started:.0f} s; "
            + (f"made: {', '.join(made)}" if made else "everything was already made") + ")",
            "  The corpus is SYNTHETIC (espeak-ng speech, motion made from it): the figures show the platform, "
            "not how these models fare on people.",
            f"  participant link:  {base}{reverse('entry', args=[study.public_token])}",
            # the demo's participants are its bots, which a study never counts as data: shown with them
            f"  dashboard:         {base}{reverse('study_dashboard', args=[study.slug])}?sessions=all",
            f"  gallery:           {base}{reverse('study_gallery', args=[study.slug])}",
            f"  report:            {base}{reverse('study_report_file', args=[study.slug, result.report_id, 'index.html'])}",
            f"  trained models:    {base}{reverse('model_list')}",
            f"  model metrics:     {pipeline.metrics_table()}",
            f"  stimulus bundle:   {result.out_dir / 'stimuli.zip'}",
            f"  researcher login:  {RESEARCHER} / {password}",
            "  stages (s):        " + ", ".join(f"{stage} {seconds:.0f}" for stage, seconds in result.timings.items()),
            "",
        ]
        self.stdout.write("\n".join(lines))
        if opts["no_serve"]:
            return
        self._serve(opts["port"])

    def _serve(self, port: int):
        """A Celery worker on the embedded broker, and gunicorn in the foreground; Ctrl-C stops both."""
        env = dict(os.environ)
        worker_env = dict(env)
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # The README's command runs as root on a fresh machine; Celery then warns at length that workers
            # should not. Said once here instead, in a line: this worker only serves this machine's demo.
            worker_env["PYTHONWARNINGS"] = "ignore:You're running the worker with superuser privileges"
            self.stdout.write("The demo's worker runs as root, as this command does; a deployment runs its workers "
                              "as an unprivileged user (docker/, docs/deploy.md).")
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "evalsite", "--quiet", "worker", "-Q", "inference,render,hardware",
             "--pool", "solo", "--loglevel", "WARNING"],
            env=worker_env,
        )
        self.stdout.write(f"Serving on http://127.0.0.1:{port}/ (Ctrl-C to stop)")
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "evalsite.wsgi:application", "--bind", f"127.0.0.1:{port}",
             "--workers", "2", "--threads", "4", "--access-logfile", "-", "--log-level", "warning"],
            env=env,
        )
        try:
            server.wait()
        except KeyboardInterrupt:
            pass
        finally:
            for proc in (server, worker):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in (server, worker):
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
