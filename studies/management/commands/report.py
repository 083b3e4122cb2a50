"""`manage.py report SLUG --out DIR` — the study's significance report: an HTML page, a PDF, CSV tables,
PNG and SVG figures and summary.json (docs/report-schema.md), from its responses as of now."""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from studies import reporting
from studies.analysis.errors import AnalysisError
from studies.models import Study

from ._analysis_options import ProgressLine, add_analysis_arguments, analysis_options


class Command(BaseCommand):
    help = ("Analyse a study's responses (exclusions, summaries with confidence intervals, omnibus and pairwise "
            "tests, effect sizes, preference scores, robustness checks) and write the report into a folder.")

    def add_arguments(self, parser):
        parser.add_argument("slug")
        add_analysis_arguments(parser)
        parser.add_argument("--include-pilot", action="store_true", help="include preview, pilot and bot sessions")

    def handle(self, *args, **opts):
        study = Study.objects.filter(slug=opts["slug"]).first()
        if study is None:
            raise CommandError(f"no study {opts['slug']!r}; `manage.py load_study FILE` creates one")
        progress = ProgressLine(self.stderr)
        try:
            made = reporting.build_report(study, Path(opts["out"]), options=analysis_options(opts),
                                          include_pilot=opts["include_pilot"], progress=progress)
        except (AnalysisError, reporting.ReportError) as exc:
            raise CommandError(str(exc))
        finally:
            progress.done()
        summary = made["summary"]
        for message in summary["messages"]:
            self.stderr.write(f"{message['level']}: {message['text']}")
        ex = summary["exclusions"]
        self.stdout.write(f"{ex['n_participants_after']} of {ex['n_participants_before']} participants kept "
                          f"({len(ex['excluded'])} excluded), {ex['n_ratings_after']} ratings analysed")
        for kind, path in made["files"].items():
            self.stdout.write(f"{kind}: {path}")
