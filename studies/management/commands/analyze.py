"""`manage.py analyze --csv FILE --design within|between|pairwise|mushra --out DIR` — the same analysis and
report as `report`, on data collected elsewhere: a tidy CSV, this platform's export, a webMUSHRA results
CSV or a HEMVIP export (detected from the header, or named with --format)."""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from studies.analysis import tidy
from studies.analysis.errors import AnalysisError
from studies.analysis.run import run_analysis
from studies.reports import write_report

from ._analysis_options import ProgressLine, add_analysis_arguments, analysis_options


class Command(BaseCommand):
    help = ("Analyse ratings from a CSV (tidy, this platform's export, webMUSHRA or HEMVIP) and write the "
            "significance report into a folder.")

    def add_arguments(self, parser):
        parser.add_argument("--csv", required=True, help="the ratings file")
        parser.add_argument("--design", required=True, choices=tidy.DESIGNS)
        parser.add_argument("--format", choices=tidy.FORMATS, help="the file's format (default: detected)")
        parser.add_argument("--matched", default="ground_truth",
                            help="pairwise: the condition whose speech and motion belong together")
        parser.add_argument("--mismatched", help="pairwise: comma-separated mismatched conditions "
                                                 "(default: random_alignment and the like, when present)")
        for rule in ("max-attention-failures", "max-catch-failures"):
            parser.add_argument(f"--{rule}", type=int, default=0)
        parser.add_argument("--min-watch-fraction", type=float)
        parser.add_argument("--min-median-answer-ms", type=float)
        parser.add_argument("--max-identical-fraction", type=float)
        parser.add_argument("--no-bs1534", action="store_true", help="mushra: skip BS.1534 post-screening")
        add_analysis_arguments(parser)

    def handle(self, *args, **opts):
        path = Path(opts["csv"])
        if not path.is_file():
            raise CommandError(f"no file {path}")
        options = analysis_options(opts)
        options["rules"] = {
            "max_attention_failures": opts["max_attention_failures"], "max_catch_failures": opts["max_catch_failures"],
            "min_watch_fraction": opts["min_watch_fraction"], "min_median_answer_ms": opts["min_median_answer_ms"],
            "max_identical_fraction": opts["max_identical_fraction"], "bs1534": not opts["no_bs1534"],
        }
        options["matched"] = opts["matched"]
        if opts["mismatched"]:
            options["mismatched"] = [c.strip() for c in opts["mismatched"].split(",") if c.strip()]
        out = Path(opts["out"])
        progress = ProgressLine(self.stderr)
        try:
            frame, fmt = tidy.load_csv(path, fmt=opts["format"])
            out.mkdir(parents=True, exist_ok=True)
            summary = run_analysis(frame, design=opts["design"], settings=options, out_dir=out, title=path.name,
                                   source={"kind": "csv", "path": str(path), "format": fmt}, progress=progress)
            files = write_report(summary, out)
        except AnalysisError as exc:
            raise CommandError(str(exc))
        finally:
            progress.done()
        for message in summary["messages"]:
            self.stderr.write(f"{message['level']}: {message['text']}")
        ex = summary["exclusions"]
        self.stdout.write(f"{fmt} file: {ex['n_participants_after']} of {ex['n_participants_before']} participants "
                          f"kept, {ex['n_ratings_after']} ratings analysed")
        for kind, file in files.items():
            self.stdout.write(f"{kind}: {file}")
