"""`manage.py export_responses SLUG` — the tidy long CSV: one row per rating."""
import io
import os
import tempfile

from django.core.management.base import BaseCommand, CommandError

from studies.exports import write_responses_csv
from studies.models import Study


class Command(BaseCommand):
    help = ("Write a study's responses as a tidy CSV (one row per rating: hashed participant, stimulus token, "
            "condition, embodiment, utterance, question/item, value, watch facts, timings).")

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--output", "-o", help="file to write (default: standard output)")
        parser.add_argument("--include-pilot", action="store_true", help="include preview, pilot and bot sessions")

    def handle(self, *args, **opts):
        study = Study.objects.filter(slug=opts["slug"]).first()
        if study is None:
            raise CommandError(f"no study {opts['slug']!r}")
        if not opts["output"]:
            buffer = io.StringIO()
            n = write_responses_csv(study, buffer, include_pilot=opts["include_pilot"])
            self.stdout.write(buffer.getvalue(), ending="")
            self.stderr.write(f"{n} rows")
            return
        directory = os.path.dirname(os.path.abspath(opts["output"]))
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".csv.tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                n = write_responses_csv(study, fh, include_pilot=opts["include_pilot"])
            os.replace(tmp, opts["output"])
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        self.stdout.write(f"{n} rows written to {opts['output']}")
