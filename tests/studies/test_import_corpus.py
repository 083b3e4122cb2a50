"""`manage.py import_corpus`: a folder or a .zip becomes a Corpus with its Utterances, files under
MEDIA_ROOT/corpora/<name>/ and a stored split; a bad corpus or a name clash changes nothing."""
import io
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from inference.motion import MotionClip
from studies.models import Corpus, Stimulus, Utterance
from tests.inference.test_importers import make_openface_corpus, write_openface_csv

pytestmark = pytest.mark.django_db


def run(*args, **kwargs):
    out, err = io.StringIO(), io.StringIO()
    call_command("import_corpus", *map(str, args), stdout=out, stderr=err, **kwargs)
    return out.getvalue(), err.getvalue()


def corpus_dir(name) -> Path:
    return Path(settings.MEDIA_ROOT) / "corpora" / name


def test_folder_import_creates_rows_files_and_split(tmp_path):
    names = make_openface_corpus(tmp_path / "src", speakers=("s1", "s2", "s3", "s4"), per_speaker=2)
    out, _ = run(tmp_path / "src", name="folder-corpus", split="0.5,0.25,0.25", seed=7)
    assert "folder-corpus: imported 8 utterance(s) at 30 fps (openface_au)" in out
    corpus = Corpus.objects.get(name="folder-corpus")
    assert corpus.split_settings["by"] == "speaker" and corpus.split_settings["seed"] == 7
    assert corpus.split_settings["counts"] == {"train": 4, "val": 2, "test": 2}
    assert corpus.import_report["imported"] == 8 and corpus.import_report["fps"] == 30.0
    utterances = list(corpus.utterances.order_by("name"))
    assert [u.name for u in utterances] == sorted(names)
    splits_by_speaker = {}
    for u in utterances:
        splits_by_speaker.setdefault(u.speaker, set()).add(u.split)
        for rel in (u.audio_path, u.original_audio_path, u.motion_path):
            assert rel.startswith("corpora/folder-corpus/") and (Path(settings.MEDIA_ROOT) / rel).is_file()
        assert u.metadata["emotion"] == "neutral" and u.metadata["layout"] == "openface_au"
        assert u.metadata["fps"] == 30.0 and u.metadata["session"] in ("s0", "s1")
        MotionClip.load(Path(settings.MEDIA_ROOT) / u.motion_path, audio_duration_s=u.duration_s)
    assert all(len(s) == 1 for s in splits_by_speaker.values())
    first = utterances[0]
    assert (first.speaker, first.transcript, first.duration_s) == ("s1", "Sentence 0, said by s1.", 1.0)
    assert first.original_audio_path == "corpora/folder-corpus/original/s1_00.wav"
    assert not [p for p in corpus_dir("folder-corpus").parent.iterdir() if p.name.startswith(".folder-corpus")]


def test_zip_import(tmp_path):
    make_openface_corpus(tmp_path / "src", per_speaker=1)
    archive = tmp_path / "corpus.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((tmp_path / "src").iterdir()):
            zf.write(path, f"corpus/{path.name}")
    run(archive, name="zip-corpus", split_by="utterance")
    corpus = Corpus.objects.get(name="zip-corpus")
    assert corpus.utterances.count() == 3
    assert sorted(corpus.utterances.values_list("split", flat=True)) == ["test", "train", "val"]
    assert (corpus_dir("zip-corpus") / "motion" / "spk1_00.npz").is_file()


def test_bad_corpus_exits_with_the_reason_and_writes_nothing(tmp_path):
    src = tmp_path / "src"
    make_openface_corpus(src, per_speaker=1)
    write_openface_csv(src / "spk2_00.csv", 30, replace_cell=(5, "AU04_r", "nan"))
    before = sorted(p.name for p in corpus_dir("x").parent.iterdir()) if corpus_dir("x").parent.exists() else []
    err = io.StringIO()
    with pytest.raises(CommandError, match=r"^spk2_00.csv, line 7: column AU04_r is NaN.*; nothing was imported$"):
        call_command("import_corpus", str(src), name="bad-corpus", stderr=err, stdout=io.StringIO())
    assert "spk2_00.csv, line 7: column AU04_r is NaN" in err.getvalue()
    assert not Corpus.objects.filter(name="bad-corpus").exists()
    assert sorted(p.name for p in corpus_dir("x").parent.iterdir()) == before  # no folder, no staging left


def test_allow_partial_imports_the_good_ones(tmp_path):
    src = tmp_path / "src"
    make_openface_corpus(src, per_speaker=2)
    (src / "spk3_01.csv").unlink()
    _, err = run(src, name="partial-corpus", allow_partial=True)
    assert "spk3_01.wav: utterance 'spk3_01' has audio but no motion file" in err
    corpus = Corpus.objects.get(name="partial-corpus")
    assert corpus.utterances.count() == 5 and corpus.import_report["skipped"] == ["spk3_01"]


def test_name_clash_is_refused_and_replace_swaps_the_recordings(tmp_path):
    make_openface_corpus(tmp_path / "a", per_speaker=1)
    make_openface_corpus(tmp_path / "b", per_speaker=2)
    run(tmp_path / "a", name="clash")
    corpus = Corpus.objects.get(name="clash")
    with pytest.raises(CommandError, match="already exists .*--replace"):
        run(tmp_path / "b", name="clash")
    assert corpus.utterances.count() == 3
    run(tmp_path / "b", name="clash", replace=True)
    assert Corpus.objects.get(name="clash").pk == corpus.pk and corpus.utterances.count() == 6
    assert len(list((corpus_dir("clash") / "motion").iterdir())) == 6


def test_replace_is_refused_when_stimuli_use_the_corpus(tmp_path, demo_study):
    used = Stimulus.objects.first().utterance.corpus
    make_openface_corpus(tmp_path / "src", per_speaker=1)
    with pytest.raises(CommandError, match="stimulus video.*import under a new --name"):
        run(tmp_path / "src", name=used.name, replace=True)
    assert Utterance.objects.filter(corpus=used).exclude(motion_path="").count() == 0


def test_bad_arguments_are_one_line_reasons(tmp_path):
    with pytest.raises(CommandError, match="--split takes three fractions"):
        run(tmp_path, name="x", split="0.9,0.2")
    with pytest.raises(CommandError, match="must be a slug"):
        run(tmp_path, name="no spaces please")
    with pytest.raises(CommandError, match="does not exist"):
        run(tmp_path / "missing", name="missing")
