"""`manage.py evaluate_models --corpus NAME` — objective metrics of trained models on held-out utterances.

Generates each model's clips for the split (kept for reuse), scores them against the recorded motion beside
the random-alignment and still baselines (inference/evaluation.py), and writes a model × region table as
CSV and Markdown (MEDIA_ROOT/reports/<corpus>/objective_metrics.*), which the significance report includes.
"""
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from studies import generators
from studies.models import Corpus, TrainedModel


class Command(BaseCommand):
    help = "Score trained models against recorded motion on a corpus split; writes CSV and Markdown tables."

    def add_arguments(self, parser):
        parser.add_argument("--corpus", required=True)
        parser.add_argument("--models", help="comma-separated model names (default: every finished model of the corpus)")
        parser.add_argument("--split", default="test", help="the held-out split (default test)")
        parser.add_argument("--seed", type=int, default=0, help="seed for sampling models and random alignment")
        parser.add_argument("--samples", type=int, default=3, help="samples per utterance for diversity (glow)")
        parser.add_argument("--out", help="output folder (default MEDIA_ROOT/reports/<corpus>)")

    def handle(self, *args, **opts):
        from inference import audio as audio_io
        from inference.evaluation import Reference, evaluate
        from inference.motion import MotionClip

        corpus = Corpus.objects.filter(name=opts["corpus"]).first()
        if corpus is None:
            raise CommandError(f"no corpus named {opts['corpus']!r}")
        models = TrainedModel.objects.filter(corpus=corpus, status=TrainedModel.Status.DONE)
        models = models.exclude(kind__in=("apc", "inverse"))  # they make no motion from speech
        if opts["models"]:
            wanted = [n.strip() for n in opts["models"].split(",") if n.strip()]
            missing = sorted(set(wanted) - set(models.filter(name__in=wanted).values_list("name", flat=True)))
            if missing:
                raise CommandError(f"not finished generator models of {corpus.name}: {', '.join(missing)}")
            models = models.filter(name__in=wanted)
        models = list(models.order_by("name"))
        if not models:
            raise CommandError(f"corpus {corpus.name} has no finished generator models; train one with `manage.py train`")
        items = generators.corpus_items(corpus, splits=(opts["split"],))
        if not items:
            raise CommandError(f"corpus {corpus.name} has no utterances in split {opts['split']!r}")
        refs = [Reference(i.name, MotionClip.load(i.motion_path), i.speaker, audio_io.decode(i.audio_path))
                for i in items]
        generated, samples = {}, {}
        media = Path(settings.MEDIA_ROOT)
        for model in tqdm(models, desc="generating", unit="model", disable=None):
            try:
                rels = generators.generate_split(model=model, split=opts["split"], seed=opts["seed"])
                generated[model.name] = {i.name: _fit(MotionClip.load(media / r), ref)
                                         for i, r, ref in zip(items, rels, refs)}
                if model.kind == "glow" and opts["samples"] > 1:
                    runs = [generators.generate_split(model=model, split=opts["split"], seed=opts["seed"] + k)
                            for k in range(opts["samples"])]
                    samples[model.name] = {i.name: [MotionClip.load(media / run[n]) for run in runs]
                                           for n, i in enumerate(items)}
            except Exception as exc:
                raise CommandError(f"generating with {model.name} failed: {type(exc).__name__}: {exc}") from None
        table = evaluate(generated, refs, seed=opts["seed"], samples=samples)
        out_dir = Path(opts["out"]) if opts["out"] else media / "reports" / corpus.name
        csv_path, md_path = generators.evaluation_write(table, out_dir)
        self.stdout.write(table.to_markdown())
        self.stdout.write(f"\nwrote {csv_path} and {md_path}")


def _fit(clip, ref):
    """A generated clip has the audio's length at the model's rate; the recording may differ in rate or by a
    frame: bring the generated clip onto the recording's frames (linear interpolation)."""
    from inference.motion import resample

    return resample(clip, ref.clip.fps, n_frames=ref.clip.n_frames)
