"""`manage.py evaluate_models --corpus NAME` — objective metrics of trained models on held-out utterances.

Generates each model's clips for the split (kept for reuse), scores them against the recorded motion beside
the random-alignment and still baselines (inference/evaluation.py), and writes a model × region table as
CSV and Markdown (MEDIA_ROOT/reports/<corpus>/objective_metrics.*), which the significance report includes.
Only models whose recipe declares that they make motion from speech are scored (not a speech encoder such
as APC, nor a robot inverse model, which consumes motion), whatever name their kind is registered under.
"""
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from inference.models import ModelKindError, recipe
from studies import generators
from studies.models import Corpus, TrainedModel


class Command(BaseCommand):
    help = "Score trained models against recorded motion on a corpus split; writes CSV and Markdown tables."

    def add_arguments(self, parser):
        parser.add_argument("--corpus", required=True)
        parser.add_argument("--models", help="comma-separated model names (default: every finished model of the corpus)")
        parser.add_argument("--split", default="test", help="the held-out split (default test)")
        parser.add_argument("--seed", type=int, default=0, help="seed for sampling models and random alignment")
        parser.add_argument("--samples", type=int, default=3,
                            help="samples per utterance for diversity (sampling models such as glow)")
        parser.add_argument("--out", help="output folder (default MEDIA_ROOT/reports/<corpus>)")

    def handle(self, *args, **opts):
        from inference import audio as audio_io
        from inference.evaluation import Reference, evaluate
        from inference.motion import MotionClip

        corpus = Corpus.objects.filter(name=opts["corpus"]).first()
        if corpus is None:
            raise CommandError(f"no corpus named {opts['corpus']!r}")
        finished = TrainedModel.objects.filter(corpus=corpus, status=TrainedModel.Status.DONE)
        if opts["models"]:
            wanted = [n.strip() for n in opts["models"].split(",") if n.strip()]
            finished = finished.filter(name__in=wanted)
        models = [m for m in finished.order_by("name") if _generates_motion_from_speech(m)]
        if opts["models"]:
            missing = sorted(set(wanted) - {m.name for m in models})
            if missing:
                raise CommandError(f"not finished generator models of {corpus.name}: {', '.join(missing)}")
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
                if recipe(model.kind).sampling and opts["samples"] > 1:
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


def _generates_motion_from_speech(model: TrainedModel) -> bool:
    """Whether the model makes motion from speech, as its kind's recipe declares (not by the kind's name: a
    kind registered under any name, e.g. another robot inverse model, is judged by what it consumes)."""
    try:
        return recipe(model.kind).generates_motion_from_speech
    except ModelKindError as exc:  # e.g. a registered kind whose EVALSITE_MODEL_KINDS entry is missing here
        raise CommandError(f"model {model.name}: {exc}") from None


def _fit(clip, ref):
    """A generated clip has the audio's length at the model's rate; the recording may differ in rate or by a
    frame: bring the generated clip onto the recording's frames (linear interpolation)."""
    from inference.motion import resample

    return resample(clip, ref.clip.fps, n_frames=ref.clip.n_frames)
