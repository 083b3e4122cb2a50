"""`manage.py import_corpus PATH --name NAME` — check a folder or .zip of utterances (audio + motion with
the same name) and store it as a corpus under MEDIA_ROOT/corpora/NAME/, split into train/val/test.

Nothing changes unless every utterance passes (or --allow-partial skips the bad ones); every problem is
printed with its file and line before the command fails.
"""
import secrets
import shutil

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from inference.importers import LANDMARK_UNITS, LOW_CONFIDENCE_POLICIES, import_corpus
from studies import corpora
from studies.services import ServiceError


def _ratios(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1) > 1e-6:
        raise CommandError(f"--split takes three fractions train,val,test adding up to 1 (e.g. 0.8,0.1,0.1), "
                           f"not {text!r}")
    return parts


class Command(BaseCommand):
    help = ("Import a folder or .zip of utterances (WAV/FLAC/MP3/M4A audio + OpenFace, Live Link Face, landmark "
            "CSV/NPY or clip NPZ motion with the same name, optional metadata.csv) as a corpus.")

    def add_arguments(self, parser):
        parser.add_argument("path", help="a folder or a .zip of utterances")
        parser.add_argument("--name", required=True,
                            help="the corpus name (a slug); files go to MEDIA_ROOT/corpora/NAME/")
        parser.add_argument("--description", default="", help="a line describing the corpus")
        parser.add_argument("--fps", type=float, help="frame rate of the corpus: clips at other rates are "
                            "resampled to it, and files without timestamps are taken to be at it")
        parser.add_argument("--confidence-threshold", type=float, default=0.8,
                            help="OpenFace frames below this tracking confidence (or success 0) are bad (default 0.8)")
        parser.add_argument("--low-confidence", choices=LOW_CONFIDENCE_POLICIES, default="interpolate",
                            help="interpolate bad frames linearly, or reject the utterance (default interpolate)")
        parser.add_argument("--max-bad-fraction", type=float, default=0.2,
                            help="reject an utterance with more than this share of bad frames (default 0.2)")
        parser.add_argument("--landmark-units", choices=LANDMARK_UNITS,
                            help="the unit of every landmark file (metres are converted to mm); default: told from "
                                 "each file's values, or a landmark_units column in metadata.csv")
        parser.add_argument("--split-by", choices=("speaker", "utterance"), default="speaker",
                            help="keep each speaker in one split, or split utterances freely (default speaker)")
        parser.add_argument("--split", default="0.8,0.1,0.1", help="train,val,test fractions (default 0.8,0.1,0.1)")
        parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
        parser.add_argument("--allow-partial", action="store_true",
                            help="skip utterances with errors (reported) instead of importing nothing")
        parser.add_argument("--replace", action="store_true",
                            help="replace an existing corpus of this name (refused when stimuli or models use it)")

    def handle(self, *args, **opts):
        name = opts["name"]
        ratios = _ratios(opts["split"])
        try:  # refuse a name clash before the long work
            corpora.corpus_import_check(name=name, replace=opts["replace"])
        except ServiceError as exc:
            raise CommandError(f"{exc.message}; nothing was changed") from None
        folder = corpora.corpus_folder(name)
        staging = folder.with_name(f".{name}.import-{secrets.token_hex(4)}")
        bar = tqdm(total=0, desc=f"checking {name}", unit="utt", disable=None)

        def progress(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            result = import_corpus(
                opts["path"], staging, fps=opts["fps"], confidence_threshold=opts["confidence_threshold"],
                low_confidence=opts["low_confidence"], max_bad_fraction=opts["max_bad_fraction"],
                allow_partial=opts["allow_partial"], landmark_units=opts["landmark_units"], progress=progress)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        finally:
            bar.close()
        if result.problems or not result.ok:
            self.stderr.write(result.report())
        if not result.ok:
            raise CommandError(result.failure_reason())
        try:
            corpus = corpora.corpus_import(result=result, name=name, split_by=opts["split_by"], ratios=ratios,
                                           seed=opts["seed"], replace=opts["replace"],
                                           description=opts["description"])
        except ServiceError as exc:
            raise CommandError(f"{exc.message}; nothing was changed") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already when the corpus was stored
        counts = corpus.split_settings["counts"]
        for note in corpus.split_settings["notes"]:
            self.stderr.write(f"split: {note}")
        self.stdout.write(
            f"{corpus.name}: imported {len(result.utterances)} utterance(s) at {result.fps:g} fps "
            f"({', '.join(result.layouts)}); split by {opts['split_by']}: {counts['train']} train, "
            f"{counts['val']} val, {counts['test']} test; files in {folder}")
