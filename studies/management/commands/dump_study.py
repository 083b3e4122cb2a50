"""`manage.py dump_study SLUG` — print a study's YAML exactly as it was loaded (any version)."""
from django.core.management.base import BaseCommand, CommandError

from studies.models import Study


class Command(BaseCommand):
    help = "Print a study's YAML, byte for byte as loaded (the latest version unless --version)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--study-version", dest="study_version", type=int, help="a version number (default: the latest)")
        parser.add_argument("--output", "-o", help="write to this file instead of standard output")

    def handle(self, *args, **opts):
        study = Study.objects.filter(slug=opts["slug"]).first()
        if study is None:
            raise CommandError(f"no study {opts['slug']!r}; `manage.py load_study FILE` creates one")
        versions = study.versions.order_by("-number")
        version = versions.filter(number=opts["study_version"]).first() if opts["study_version"] else versions.first()
        if version is None:
            raise CommandError(f"study {study.slug} has no version {opts['study_version']}")
        if opts["output"]:
            with open(opts["output"], "w", encoding="utf-8", newline="") as fh:
                fh.write(version.spec_yaml)
        else:
            self.stdout.write(version.spec_yaml, ending="")
