"""`manage.py demo` — make the demo corpus, stimuli and study, then serve the site on 127.0.0.1.

Everything already made is reused, so a second run goes straight to serving. `--quick` makes a smaller
study (used by the tests); `--no-serve` stops after preparing.
"""
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse
from tqdm import tqdm

from studies import services
from studies.demo import demo_corpus_build, demo_spec_text
from studies.spec import SpecError

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
    help = "Prepare the demo study (corpus, placeholder stimuli, study) and serve it at http://127.0.0.1:8000."

    def add_arguments(self, parser):
        parser.add_argument("--quick", action="store_true", help="a smaller study (3 utterances, short clips)")
        parser.add_argument("--no-serve", action="store_true", help="prepare only; do not start the server")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--bots", type=int, default=0, help="run this many attentive bots first")

    def handle(self, *args, **opts):
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

        bar = tqdm(total=1, desc="demo stimuli", unit="clip", disable=None)

        def progress(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            demo_corpus_build(quick=opts["quick"], progress=progress)
        finally:
            bar.close()
        try:
            version, _ = services.study_load(text=demo_spec_text(opts["quick"]), owner=user)
        except SpecError as exc:
            raise CommandError(f"the demo study does not load: {exc}") from None
        study = version.study
        if study.status != "live":
            services.study_set_status(study=study, status="live")
        if opts["bots"]:
            call_command("run_bots", study.slug, n=opts["bots"], behaviour="attentive",
                         base_url=f"http://127.0.0.1:{opts['port']}", serve=True)

        base = f"http://127.0.0.1:{opts['port']}"
        lines = [
            "",
            "Demo study ready: " + study.title,
            f"  participant link:  {base}{reverse('entry', args=[study.public_token])}",
            f"  researcher page:   {base}{reverse('study_dashboard', args=[study.slug])}",
            f"  researcher login:  {RESEARCHER} / {password}",
            "  stimuli: placeholder clips (ffmpeg + espeak-ng) until the avatar renderer lands",
            "",
        ]
        self.stdout.write("\n".join(lines))
        if opts["no_serve"]:
            return
        self._serve(opts["port"])

    def _serve(self, port: int):
        """A Celery worker on the embedded broker, and gunicorn in the foreground; Ctrl-C stops both."""
        env = dict(os.environ)
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "evalsite", "worker", "-Q", "inference,render,hardware",
             "--pool", "solo", "--loglevel", "WARNING"],
            env=env,
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
