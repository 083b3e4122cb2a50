"""`manage.py export_stimuli SLUG --out FILE.zip [--blind]` — a study's videos as a self-checking bundle;
`manage.py export_stimuli --verify FILE.zip` rechecks one.

The bundle (studies/bundles.py) holds stimuli/<token>.mp4, manifest.csv and manifest.json (one row per
video), study.yaml, mturk_batch.csv (stimulus_token,video_url: the URL is --base-url + token + ".mp4"),
README.txt and CHECKSUMS.sha256 (`sha256sum -c CHECKSUMS.sha256` after unzipping). With --blind the
manifest keeps only token, embodiment and technical facts, and the condition key (with study.yaml, which
names the conditions) is written beside the bundle as FILE.key.zip.
"""
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from studies import bundles
from studies.models import Study


class Command(BaseCommand):
    help = ("Export a study's stimulus videos with a manifest (CSV and JSON), the study YAML, an MTurk batch CSV, "
            "a README and SHA-256 checksums as one zip; --blind moves the condition key to FILE.key.zip beside "
            "it. `--verify FILE.zip` rechecks a bundle's hashes (and its blinding).")

    def add_arguments(self, parser):
        parser.add_argument("slug", nargs="?", help="the study to export")
        parser.add_argument("--out", "-o", help="the zip to write, e.g. stimuli.zip")
        parser.add_argument("--blind", action="store_true",
                            help="manifest without conditions, utterances or models; the key goes to FILE.key.zip")
        parser.add_argument("--base-url", help="where the videos will be hosted: mturk_batch.csv's video_url is this "
                                               "+ token + '.mp4' (default: PUBLIC_BASE_URL + '/bundle/')")
        parser.add_argument("--study-version", dest="study_version", type=int,
                            help="a version number (default: the latest)")
        parser.add_argument("--force", action="store_true", help="replace an existing output file")
        parser.add_argument("--verify", metavar="FILE.zip", help="recheck a bundle or key instead of exporting")

    def handle(self, *args, **opts):
        if opts["verify"]:
            if opts["slug"] or opts["out"]:
                raise CommandError("--verify takes only the bundle: export_stimuli --verify FILE.zip")
            return self.verify(opts["verify"])
        if not opts["slug"] or not opts["out"]:
            raise CommandError("give a study and a file: export_stimuli SLUG --out FILE.zip")
        study = Study.objects.filter(slug=opts["slug"]).first()
        if study is None:
            raise CommandError(f"no study {opts['slug']!r}; `manage.py load_study FILE` creates one")
        versions = study.versions.order_by("-number")
        version = versions.filter(number=opts["study_version"]).first() if opts["study_version"] else versions.first()
        if version is None:
            raise CommandError(f"study {study.slug} has no version {opts['study_version']}")
        bar = tqdm(total=0, desc="checking", unit="video", disable=None)

        def progress(done, total, stage):
            bar.set_description(stage, refresh=False)
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            result = bundles.export_bundle(version=version, out=opts["out"], blind=opts["blind"],
                                           base_url=opts["base_url"], force=opts["force"], progress=progress)
        except bundles.BundleError as exc:
            bar.close()
            for problem in exc.problems:
                self.stderr.write(problem)
            raise CommandError(exc.message) from None
        bar.close()
        for warning in result.warnings:
            self.stderr.write(f"warning: {warning}")
        placeholders = f", {result.n_placeholders} placeholder clip(s)" if result.n_placeholders else ""
        self.stdout.write(f"{study.slug} v{version.number}: {result.n_videos} video(s) "
                          f"({result.video_bytes / 1e6:.1f} MB{placeholders}) written to {result.path}")
        if result.key_path:
            self.stdout.write(f"blind bundle: the condition key is in {result.key_path}; keep it apart from raters")

    def verify(self, path):
        report = bundles.verify_bundle(path, names_for=bundles.study_names)
        if not report.ok:
            for problem in report.problems:
                self.stderr.write(problem)
            raise CommandError(f"{path} does not verify: {len(report.problems)} problem(s), listed above")
        for note in report.notes:
            self.stdout.write(note)
        self.stdout.write("OK " + report.summary())
