"""`manage.py train --corpus NAME --model KIND` — train a generator (or the robot inverse model).

By default it trains here, with a progress bar; `--background` queues it on the Celery `inference` queue
instead, and the researcher's models page (/models/) shows its progress. Interrupted runs resume from
their last epoch when started again with the same name.
"""
import json

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from studies import generators
from studies.models import Corpus, TrainedModel


def _parse_settings(pairs: list[str]) -> dict:
    """--set train.max_epochs=50 --set hidden=32 → {"train": {"max_epochs": 50}, "hidden": 32}."""
    out: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"--set needs KEY=VALUE, got {pair!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


class Command(BaseCommand):
    help = ("Train a model of KIND (separate, joint, forked, glow, apc, audio2landmark, inverse, or a kind "
            "registered with EVALSITE_MODEL_KINDS) on a corpus; shows progress, resumes an interrupted run, exits "
            "non-zero with the reason on failure.")

    def add_arguments(self, parser):
        parser.add_argument("--corpus", required=True, help="an imported corpus (import_corpus)")
        # No argparse choices: the kinds include those registered in EVALSITE_MODEL_KINDS, checked in handle()
        # so that a bad registration is a one-line error, not a broken --help.
        parser.add_argument("--model", required=True, dest="kind",
                            help="the model kind: separate, joint, forked, glow, apc, audio2landmark, inverse, or "
                                 "one registered with EVALSITE_MODEL_KINDS=KIND=MODULE (docs/models.md)")
        parser.add_argument("--name", help="the model's name, used by conditions as model(NAME) "
                                           "(default: CORPUS-KIND)")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override a setting, e.g. --set train.max_epochs=50 --set hidden=32")
        parser.add_argument("--init-from", help="a trained model whose matching weights start this one (APC)")
        parser.add_argument("--pairs", default="", help="inverse: command/landmark pairs .npz (commands, "
                                                        "landmarks, channels[, robot]); default: the synthetic servo face")
        parser.add_argument("--background", action="store_true", help="queue on the inference workers and return")

    def handle(self, *args, **opts):
        from inference.models import ModelKindError, recipe

        try:
            recipe(opts["kind"])  # an unknown kind, a bad EVALSITE_MODEL_KINDS or a module without RECIPE
        except ModelKindError as exc:
            raise CommandError(str(exc)) from None
        corpus = Corpus.objects.filter(name=opts["corpus"]).first()
        if corpus is None:
            raise CommandError(f"no corpus named {opts['corpus']!r}; import one with `manage.py import_corpus`")
        name = opts["name"] or f"{corpus.name}-{opts['kind']}"
        init_from = None
        if opts["init_from"]:
            init_from = TrainedModel.objects.filter(name=opts["init_from"]).first()
            if init_from is None:
                raise CommandError(f"no trained model named {opts['init_from']!r}")
        model = TrainedModel.objects.filter(name=name).first()
        if model is not None and model.status == TrainedModel.Status.DONE:
            self.stdout.write(f"{name}: already trained ({model.checkpoint_path})")
            return
        if model is not None and model.kind != opts["kind"]:
            raise CommandError(f"a {model.kind} model is already named {name!r}; choose another --name")
        if model is None:
            try:
                model = generators.trained_model_create(
                    name=name, kind=opts["kind"], corpus=corpus, config=_parse_settings(opts["set"]),
                    init_from=init_from, pairs_path=opts["pairs"])
            except generators.GeneratorError as exc:
                raise CommandError(str(exc)) from None
        elif model.status == TrainedModel.Status.FAILED:
            generators.trained_model_retry(model=model)
        if opts["background"]:
            from studies.tasks import inference_train_model

            result = inference_train_model.delay(model.pk)
            TrainedModel.objects.filter(pk=model.pk).update(task_id=result.id)
            self.stdout.write(f"{name}: queued on the inference workers (task {result.id}); see /models/")
            return
        bars: dict[str, tqdm] = {}

        def echo(event):
            stage = event.get("stage", "")
            if stage == "features":
                bar = bars.get("features") or bars.setdefault(
                    "features", tqdm(total=event["total"], desc="features", unit="utt", disable=None))
                bar.n = event["done"]
                bar.refresh()
                return
            key = f"stage:{stage}"
            if key not in bars:
                bars[key] = tqdm(total=event["max_epochs"], desc=f"{name} [{stage}]", unit="epoch", disable=None)
            bar = bars[key]
            bar.n = event["epoch"]
            bar.set_postfix(train=f"{event['train_loss']:.4f}", val=f"{event['val_loss']:.4f}", refresh=False)
            bar.refresh()

        try:
            model = generators.trained_model_run(model_id=model.pk, echo=echo)
        except Exception as exc:
            raise CommandError(f"training {name} failed: {type(exc).__name__}: {exc}") from None
        finally:
            for bar in bars.values():
                bar.close()
        epochs = model.progress.get("epochs")
        self.stdout.write(f"{name}: trained ({epochs} epochs, best validation loss "
                          f"{model.progress.get('best_val', float('nan')):.4f}) → {model.checkpoint_path}")
