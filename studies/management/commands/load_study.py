"""`manage.py load_study FILE` — validate a study YAML and store it as the study's next version."""
import sys
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from studies import services
from studies.demo import demo_spec_text
from studies.spec import SpecError, reference


class Command(BaseCommand):
    help = "Load a study from a YAML file (a new version if it changed). Errors name the line and the fix."

    def add_arguments(self, parser):
        parser.add_argument("file", nargs="?", help="the study YAML (- for standard input)")
        parser.add_argument("--owner", help="username of the researcher who owns the study")
        parser.add_argument("--open", action="store_true", help="open the study to participants (status live)")
        parser.add_argument("--reference", action="store_true", help="print every key with its default and exit")
        parser.add_argument("--example", action="store_true", help="print the demo study's YAML and exit")

    def handle(self, *args, **opts):
        if opts["reference"]:
            self.stdout.write(reference())
            return
        if opts["example"]:
            self.stdout.write(demo_spec_text())
            return
        if not opts["file"]:
            raise CommandError("name the study YAML file (or use --reference / --example)")
        try:
            text = sys.stdin.read() if opts["file"] == "-" else Path(opts["file"]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {opts['file']}: {exc}") from None
        owner = None
        if opts["owner"]:
            owner = get_user_model().objects.filter(username=opts["owner"]).first()
            if owner is None:
                raise CommandError(f"no user named {opts['owner']!r}; create it with `manage.py createsuperuser`")
        try:
            version, created = services.study_load(text=text, owner=owner)
        except SpecError as exc:
            for problem in exc.problems:
                self.stderr.write(f"{opts['file']}: {problem}")
            raise CommandError(f"{len(exc.problems)} problem(s) in {opts['file']}; nothing was changed") from None
        if opts["open"]:
            services.study_set_status(study=version.study, status="live")
        state = "loaded as" if created else "unchanged, still"
        self.stdout.write(f"{version.study.slug}: {state} version {version.number} (status {version.study.status})")
