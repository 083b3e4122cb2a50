"""Corpora: store a corpus that inference.importers has checked and written, as rows and files under
MEDIA_ROOT/corpora/<name>/ (HackSoft-style services, kept out of services.py because only the
`import_corpus` command and its tests use them).

The importer builds the corpus folder somewhere beside its final place; `corpus_import` moves it into
place and creates the Corpus and its Utterances in one transaction, so the database and the folder
agree: either both show the new corpus or neither changes.
"""
from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction

from inference.importers import ImportResult, assign_split, split_counts

from .models import Corpus, Stimulus, Utterance
from .services import Conflict, ServiceError

CORPORA_DIR = "corpora"


def corpus_folder(name: str) -> Path:
    return Path(settings.MEDIA_ROOT) / CORPORA_DIR / name


def corpus_import_check(*, name: str, replace: bool = False) -> Corpus | None:
    """Raise unless a corpus called `name` may be imported now; return the corpus it would replace.

    Refused: a name that is not a slug; an existing corpus (or a leftover folder) without `replace`;
    replacing a corpus whose utterances have stimuli or that models were trained on, because those
    rows point at its utterances and would silently describe different recordings.
    """
    try:
        validate_slug(name)
    except ValidationError:
        raise ServiceError(f"corpus name {name!r} must be a slug: letters, digits, '-' and '_' only") from None
    longest = Corpus._meta.get_field("name").max_length
    if len(name) > longest:
        raise ServiceError(f"corpus name {name!r} is longer than {longest} characters")
    corpus = Corpus.objects.filter(name=name).first()
    if corpus is None:
        if corpus_folder(name).exists() and not replace:
            raise Conflict(f"the folder {corpus_folder(name)} exists though no corpus {name!r} does; remove it or "
                           f"pass --replace", code="exists")
        return None
    if not replace:
        raise Conflict(f"a corpus named {name!r} already exists ({corpus.utterances.count()} utterances); choose "
                       f"another --name, or pass --replace to swap its recordings", code="exists")
    stimuli = Stimulus.objects.filter(utterance__corpus=corpus).count()
    if stimuli:
        raise Conflict(f"corpus {name!r} cannot be replaced: {stimuli} stimulus video(s) were made from its "
                       f"utterances, and studies and ratings refer to them; import under a new --name instead",
                       code="in_use")
    models = corpus.trained_models.count()
    if models:
        raise Conflict(f"corpus {name!r} cannot be replaced: {models} model(s) were trained on it; import under a "
                       f"new --name instead", code="in_use")
    return corpus


@transaction.atomic
def corpus_import(*, result: ImportResult, name: str, split_by: str = "speaker",
                  ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0, replace: bool = False,
                  description: str = "") -> Corpus:
    """Store an imported corpus: split it, create the Corpus and its Utterances, move its folder into
    MEDIA_ROOT/corpora/<name>/ (the folder it replaces is removed once the transaction commits)."""
    old = corpus_import_check(name=name, replace=replace)
    if not result.ok or result.root is None:
        raise ServiceError(result.failure_reason() or "the import wrote no corpus folder")
    notes: list[str] = []
    split = assign_split(result.utterances, by=split_by, ratios=ratios, seed=seed, notes=notes)
    split_settings = {"by": split_by, "ratios": list(ratios), "seed": seed, "counts": split_counts(split),
                      "notes": notes}
    report = result.to_dict()
    if old is not None:
        old.utterances.all().delete()
        corpus = old
        corpus.description = description or corpus.description
        corpus.import_report, corpus.split_settings = report, split_settings
        corpus.save()
    else:
        corpus = Corpus.objects.create(name=name, description=description, import_report=report,
                                       split_settings=split_settings)
    rel = f"{CORPORA_DIR}/{name}"
    Utterance.objects.bulk_create([
        Utterance(corpus=corpus, name=u.name, speaker=u.speaker, transcript=u.transcript, duration_s=u.duration_s,
                  split=split[u.name], audio_path=f"{rel}/{u.audio_path}",
                  original_audio_path=f"{rel}/{u.original_path}", motion_path=f"{rel}/{u.clip_path}",
                  metadata={**u.metadata, "emotion": u.emotion, "fps": u.fps, "layout": u.layout,
                            "n_frames": u.n_frames, "interpolated_frames": u.interpolated_frames})
        for u in result.utterances
    ])
    _move_into_place(Path(result.root), corpus_folder(name))
    return corpus


def _move_into_place(folder: Path, destination: Path) -> None:
    """Rename `folder` to `destination`. An old destination is moved aside first, put back if the move
    fails, and deleted once the transaction commits (so call `corpus_import` outside other transactions:
    a rollback after this point cannot unmove the files)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    aside = None
    if destination.exists():
        aside = destination.with_name(f".{destination.name}.replaced-{secrets.token_hex(4)}")
        destination.rename(aside)
    try:
        shutil.move(str(folder), str(destination))
    except BaseException:
        if aside is not None:
            aside.rename(destination)
        raise
    if aside is not None:
        transaction.on_commit(lambda: shutil.rmtree(aside, ignore_errors=True))
