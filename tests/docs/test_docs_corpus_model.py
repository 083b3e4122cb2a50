"""Keeps docs/corpus.md and docs/models.md true.

The example corpora import as the doc's table says and make_examples.py remakes them; the validation
messages the doc quotes are what the importer says; every `manage.py` line in the two docs parses with its
command's own argparse; the YAML examples are valid studies naming the model the doc trains; and a model
kind registered through EVALSITE_MODEL_KINDS (the worked example, tiny_gru) is found, trains through
`manage.py train`, generates a clip of the audio's length and is scored, while bad registrations are
refused with a clear message. Expected values come from the docs, never from the code under test.
"""
from __future__ import annotations

import importlib.util
import io
import os
import re
import shlex
import shutil
import sys
import wave
import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from tests.docs import assert_parses, fenced_blocks, manage_calls

REPO = Path(__file__).resolve().parents[2]
CORPUS_DOC = REPO / "docs" / "corpus.md"
MODELS_DOC = REPO / "docs" / "models.md"
EXAMPLES = REPO / "docs" / "examples" / "corpus"
OWN_MODEL = REPO / "docs" / "examples" / "own_model"


# --- reading the docs ------------------------------------------------------------------------------------


def fenced(doc: Path, lang: str) -> list[str]:
    """The bodies of the doc's fenced blocks whose info string is exactly `lang` ("" for blocks without one)."""
    return [body for info, body in fenced_blocks(doc.read_text(encoding="utf-8")) if info == lang]


def shell_lines(doc: Path) -> list[list[str]]:
    """Each command of the doc's ```sh blocks as tokens (continuations joined, comments dropped)."""
    lines = []
    for block in fenced(doc, "sh"):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens:
                lines.append(tokens)
    return lines


def manage_commands(doc: Path) -> list[tuple[str, list[str]]]:
    """(command, arguments) of every `manage.py` call in the doc's ```sh blocks."""
    return [(words[0], words[1:]) for words in manage_calls(doc.read_text(encoding="utf-8"))]


def exports(doc: Path) -> dict[str, str]:
    """`export NAME=VALUE` lines of the doc's ```sh blocks, with $PWD read as the repository root."""
    found = {}
    for tokens in shell_lines(doc):
        if tokens[0] == "export" and "=" in tokens[1]:
            name, _, value = tokens[1].partition("=")
            found[name] = value.replace("$PWD", str(REPO))
    return found


def table(doc: Path, header_start: str) -> list[list[str]]:
    """The rows of the markdown table whose header line starts with `header_start` (cells stripped)."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def option_value(args: list[str], option: str) -> str:
    return args[args.index(option) + 1]


def replace_option(args: list[str], option: str, value: str) -> list[str]:
    args = list(args)
    args[args.index(option) + 1] = value
    return args


EXAMPLE_ROWS = {row[0].strip("`"): {"format": row[1], "layout": row[2].strip("`"), "fps": float(row[3]),
                                    "utterances": int(row[4])}
                for row in table(CORPUS_DOC, "| folder |")}


def run_command(name: str, *args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(name, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


# --- the example corpora ---------------------------------------------------------------------------------


def test_the_example_folders_are_the_ones_the_table_lists_and_stay_small():
    on_disk = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    assert on_disk == sorted(EXAMPLE_ROWS)
    total = sum(p.stat().st_size for p in EXAMPLES.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert total < 1024 * 1024, f"docs/examples/corpus holds {total} bytes; keep it under 1 MB"


@pytest.mark.parametrize("folder", sorted(EXAMPLE_ROWS))
def test_each_example_imports_as_the_table_says(db, folder):
    from studies.models import Corpus

    expected = EXAMPLE_ROWS[folder]
    name = f"doc-{folder.replace('_', '-')}"
    out, _ = run_command("import_corpus", str(EXAMPLES / folder), "--name", name)
    assert f"imported {expected['utterances']} utterance(s) at {expected['fps']:g} fps ({expected['layout']})" in out
    corpus = Corpus.objects.get(name=name)
    utterances = list(corpus.utterances.all())
    assert len(utterances) == expected["utterances"]
    assert {u.metadata["layout"] for u in utterances} == {expected["layout"]}
    assert {u.metadata["fps"] for u in utterances} == {expected["fps"]}
    # The speakers the doc names for the examples come from metadata.csv.
    assert {(u.name, u.speaker) for u in utterances} == {("ex01", "anna"), ("ex02", "ben")}
    # Fewer than three utterances: all go to train (the doc says so).
    assert {u.split for u in utterances} == {"train"}


def test_a_zip_of_an_example_folder_imports(db, tmp_path):
    from studies.models import Corpus

    archive = tmp_path / "openface.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((EXAMPLES / "openface").iterdir()):
            zf.write(path, f"openface/{path.name}")  # a top folder inside the archive, as the doc allows
    run_command("import_corpus", str(archive), "--name", "doc-openface-zip")
    assert Corpus.objects.get(name="doc-openface-zip").utterances.count() == EXAMPLE_ROWS["openface"]["utterances"]


def test_the_openface_example_interpolates_the_frame_the_doc_names(db):
    from studies.models import Corpus

    text = CORPUS_DOC.read_text(encoding="utf-8")
    frame, utterance, line = re.search(r"frame (\d+) of `(\w+)\.csv` \(line (\d+)\) has confidence", text).groups()
    _, err = run_command("import_corpus", str(EXAMPLES / "openface"), "--name", "doc-openface-conf")
    assert f"{utterance}.csv, line {line}: interpolated 1 of" in err
    assert int(line) == int(frame) + 1  # the header is line 1, frames count from 0
    u = Corpus.objects.get(name="doc-openface-conf").utterances.get(name=utterance)
    assert u.metadata["interpolated_frames"] == 1


def _load_make_examples(monkeypatch):
    spec = importlib.util.spec_from_file_location("make_examples_under_test", EXAMPLES / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_make_examples_remakes_the_shipped_files(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts the repository root on sys.path
    _load_make_examples(monkeypatch).make_examples(tmp_path)
    shipped = sorted(p.relative_to(EXAMPLES) for p in EXAMPLES.rglob("*")
                     if p.is_file() and p.parent != EXAMPLES and "__pycache__" not in p.parts)
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert made == shipped
    for rel in shipped:  # byte for byte, the clips (.npz) too: MotionClip.save writes the same bytes every time
        assert (EXAMPLES / rel).read_bytes() == (tmp_path / rel).read_bytes(), f"{rel} differs"


def test_the_examples_last_as_long_as_the_doc_says():
    text = CORPUS_DOC.read_text(encoding="utf-8")
    durations = dict(re.findall(r"`(ex\d\d)`, ([\d.]+) s", text))
    assert durations, "the doc names the examples' durations"
    for folder in EXAMPLE_ROWS:
        for name, seconds in durations.items():
            assert wav_seconds(EXAMPLES / folder / f"{name}.wav") == pytest.approx(float(seconds))


def test_the_metadata_block_is_the_examples_file():
    block = next(b for b in fenced(CORPUS_DOC, "") if b.startswith("utterance,"))
    for folder in EXAMPLE_ROWS:
        if folder != "mediapipe468_npy":  # that one adds an fps column, as the doc says
            assert (EXAMPLES / folder / "metadata.csv").read_text(encoding="utf-8") == block, folder
    assert (EXAMPLES / "mediapipe468_npy" / "metadata.csv").read_text(encoding="utf-8").splitlines()[0].endswith(",fps")


def test_the_python_clip_example_writes_a_clip_that_imports(tmp_path, monkeypatch):
    from inference.motion import MotionClip

    (code,) = fenced(CORPUS_DOC, "python")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/corpus.md", "exec"), {})
    clip = MotionClip.load(tmp_path / "my-corpus" / "ex01.npz", audio_duration_s=1.0)
    assert (clip.layout, clip.n_frames, clip.head_pose.shape) == ("arkit52", 25, (25, 6))


def test_the_doc_import_commands_run_as_written(db, monkeypatch):
    from studies.models import Corpus

    monkeypatch.chdir(REPO)
    calls = [args for command, args in manage_commands(CORPUS_DOC)
             if command == "import_corpus" and args[0].startswith("docs/examples/")]
    assert len(calls) >= 3
    outputs = {}
    for args in calls:
        out, _ = run_command("import_corpus", *args)
        outputs[option_value(args, "--name")] = out
        corpus = Corpus.objects.get(name=option_value(args, "--name"))
        assert corpus.utterances.count() == EXAMPLE_ROWS[Path(args[0]).name]["utterances"]
        if "--split-by" in args:
            assert corpus.split_settings["by"] == option_value(args, "--split-by")
    said = re.search(r"prints one line such as `([^`]*)`", CORPUS_DOC.read_text(encoding="utf-8")).group(1)
    said = " ".join(said.split()).removesuffix(" …")
    first = option_value(calls[0], "--name")
    assert " ".join(outputs[first].split()).startswith(said)


# The changes the doc's validation table describes, made to a copy of the openface example.


def _edit_lines(path: Path, change) -> None:
    lines = path.read_text(encoding="utf-8").split("\n")
    path.write_text("\n".join(change(lines)), encoding="utf-8")


def _replace_cell(line: str, column: int, value: str) -> str:
    cells = line.split(", ")
    cells[column] = value
    return ", ".join(cells)


MUTATIONS = {
    "delete `ex02.csv`": lambda d: (d / "ex02.csv").unlink(),
    "write `n/a` as the confidence on line 6 of `ex01.csv`": lambda d: _edit_lines(
        d / "ex01.csv", lambda L: [_replace_cell(l, 3, "n/a") if i == 5 else l for i, l in enumerate(L)]),
    "delete line 9 of `ex01.csv` (a dropped frame)": lambda d: _edit_lines(
        d / "ex01.csv", lambda L: L[:8] + L[9:]),
    "keep only the first 24 frames of `ex01.csv`": lambda d: _edit_lines(
        d / "ex01.csv", lambda L: L[:25] + [""]),
    "confidence 0.50 on lines 3–12 of `ex01.csv`": lambda d: _edit_lines(
        d / "ex01.csv", lambda L: [_replace_cell(l, 3, "0.50") if 2 <= i <= 11 else l for i, l in enumerate(L)]),
    "add a row `ex03,carl,neutral,x` to `metadata.csv`": lambda d: _edit_lines(
        d / "metadata.csv", lambda L: [l for l in L if l] + ["ex03,carl,neutral,x", ""]),
}
MESSAGE_ROWS = table(CORPUS_DOC, "| change to `docs/examples/corpus/openface` |")


def test_every_documented_change_has_a_check():
    assert sorted(row[0] for row in MESSAGE_ROWS) == sorted(MUTATIONS)


@pytest.mark.parametrize("change,message", [(row[0], row[1].strip("`")) for row in MESSAGE_ROWS])
def test_the_documented_messages_are_what_the_importer_says(tmp_path, change, message):
    from inference.importers import import_corpus

    source = tmp_path / "openface"
    shutil.copytree(EXAMPLES / "openface", source)
    MUTATIONS[change](source)
    result = import_corpus(source, tmp_path / "out")
    assert not result.ok and not (tmp_path / "out").exists()  # nothing is written
    assert message in result.report(), result.report()


# --- commands in both docs --------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", [CORPUS_DOC, MODELS_DOC], ids=lambda p: p.name)
def test_every_manage_py_line_names_a_real_command_and_options(doc):
    calls = manage_commands(doc)
    assert len(calls) >= 5, f"{doc.name} shows its commands in ```sh blocks"
    for name, args in calls:
        assert_parses([name, *args], doc.name)


@pytest.mark.parametrize("doc", [CORPUS_DOC, MODELS_DOC], ids=lambda p: p.name)
def test_scripts_named_in_the_docs_exist(doc):
    scripts = [t for tokens in shell_lines(doc) for t in tokens if t.endswith(".py") and not t.endswith("manage.py")]
    for script in scripts:
        assert (REPO / script).is_file(), script


def test_the_study_examples_are_valid_and_name_the_model_the_doc_trains():
    from studies.spec import parse_spec

    (train_args,) = [args for name, args in manage_commands(MODELS_DOC) if name == "train"]
    trained = option_value(train_args, "--name")
    definitions = {}
    for block in fenced(MODELS_DOC, "yaml"):
        definitions.update(parse_spec(block)["stimuli"]["condition_definitions"])
    models = [d for d in definitions.values() if d["kind"] == "model"]
    assert [d["params"]["model"] for d in models] == [trained]
    assert [d["kind"] for d in definitions.values()].count("uploaded") == 1
    render_calls = [args for name, args in manage_commands(MODELS_DOC) if name == "render_study" and "--uploads" in args]
    assert render_calls, "the doc shows render_study --uploads"


# --- EVALSITE_MODEL_KINDS ---------------------------------------------------------------------------------


@pytest.fixture
def registered(monkeypatch):
    """The environment the models doc tells the reader to export."""
    env = exports(MODELS_DOC)
    assert set(env) == {"PYTHONPATH", "EVALSITE_MODEL_KINDS"}
    for folder in env["PYTHONPATH"].split(os.pathsep):
        monkeypatch.syspath_prepend(folder)
    monkeypatch.setenv("EVALSITE_MODEL_KINDS", env["EVALSITE_MODEL_KINDS"])
    return env


def test_a_kind_registered_as_the_doc_says_is_found(registered, monkeypatch):
    from inference.models import KINDS, recipe

    kind = registered["EVALSITE_MODEL_KINDS"].partition("=")[0]
    assert kind == "tiny_gru" and kind in KINDS and "separate" in KINDS
    rec = recipe(kind)
    module = importlib.import_module(registered["EVALSITE_MODEL_KINDS"].partition("=")[2])
    assert rec is module.RECIPE and rec.kind == kind
    monkeypatch.delenv("EVALSITE_MODEL_KINDS")
    assert kind not in KINDS
    with pytest.raises(ValueError, match="unknown model kind 'tiny_gru'"):
        recipe(kind)


@pytest.mark.parametrize("value,kind,message", [
    ("tiny_gru", None, "is not KIND=MODULE"),
    ("Tiny=tiny_gru", None, "is not a valid name"),
    ("tiny_gru=tiny gru", None, "is not a Python module path"),
    ("separate=tiny_gru", None, "is built in"),
    ("tiny_gru=tiny_gru,tiny_gru=other", None, "registered twice"),
    ("nomod=no_such_module_for_evalsite", "nomod", "cannot import no_such_module_for_evalsite"),
    ("norecipe=json", "norecipe", "module json has no RECIPE"),
    ("other=tiny_gru", "other", "tiny_gru.RECIPE is of kind 'tiny_gru'"),
])
def test_a_bad_registration_is_refused_clearly(monkeypatch, value, kind, message):
    from inference.models import KINDS, ModelKindError, recipe

    monkeypatch.syspath_prepend(str(OWN_MODEL))
    monkeypatch.setenv("EVALSITE_MODEL_KINDS", value)
    with pytest.raises(ModelKindError, match=re.escape(message)) as caught:
        if kind is None:
            list(KINDS)
        else:
            recipe(kind)
    assert isinstance(caught.value, ValueError)  # callers that catch ValueError keep working
    if kind is None:  # a malformed variable: the message names it first
        assert str(caught.value).startswith("EVALSITE_MODEL_KINDS: ")


def test_train_refuses_a_bad_registration_with_one_line(monkeypatch):
    monkeypatch.setenv("EVALSITE_MODEL_KINDS", "separate=tiny_gru")
    with pytest.raises(CommandError, match="kind 'separate' is built in") as caught:
        call_command("train", "--corpus", "any", "--model", "separate", stdout=io.StringIO())
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_the_doc_walkthrough_trains_generates_and_scores_the_own_model(db, registered):
    """Import an example corpus, then run the doc's `train` and `evaluate_models` lines on it."""
    from django.conf import settings

    from inference.audio import SAMPLE_RATE, decode
    from inference.generate import generate
    from inference.layouts import ARKIT52
    from studies import generators
    from studies.models import Corpus, TrainedModel

    run_command("import_corpus", str(EXAMPLES / "live_link_face"), "--name", "doc-own-model")
    calls = dict(manage_commands(MODELS_DOC))
    train_args = replace_option(calls["train"], "--corpus", "doc-own-model")
    out, _ = run_command("train", *train_args)
    model = TrainedModel.objects.get(name=option_value(train_args, "--name"))
    assert model.kind == option_value(train_args, "--model") and model.status == TrainedModel.Status.DONE
    max_epochs = int(option_value(train_args, "--set").partition("=")[2])
    assert 1 <= model.progress["epochs"] <= max_epochs

    checkpoint = generators.checkpoint_file(model)
    fps = float(re.search(r"fps: float = ([\d.]+)", fenced(MODELS_DOC, "python")[0]).group(1))  # the doc's Config
    for utterance in Corpus.objects.get(name="doc-own-model").utterances.all():
        audio = Path(settings.MEDIA_ROOT) / utterance.audio_path
        clip = generate(checkpoint, audio)
        seconds = len(decode(audio)) / SAMPLE_RATE
        assert clip.layout == "arkit52" and clip.channels == ARKIT52  # the layout the doc declares
        assert clip.fps == fps and clip.n_frames == round(seconds * fps)
        assert np.isfinite(clip.values).all() and clip.values.min() >= 0 and clip.values.max() <= 1
        assert clip.metadata["model"] == "tiny_gru"

    # The examples have only a train split (two utterances), so score that one.
    evaluate_args = replace_option(calls["evaluate_models"], "--corpus", "doc-own-model") + ["--split", "train"]
    out, _ = run_command("evaluate_models", *evaluate_args)
    assert model.name in out


def test_a_bad_model_kinds_variable_is_a_system_check_error(monkeypatch):
    """Reported when the site or a command starts (manage.py check), not on the first page listing models."""
    from django.core import checks

    monkeypatch.setenv("EVALSITE_MODEL_KINDS", "separate=somewhere.else")
    errors = [e for e in checks.run_checks() if e.id == "studies.E001"]
    assert len(errors) == 1 and "built in" in errors[0].msg
    monkeypatch.delenv("EVALSITE_MODEL_KINDS")
    assert not [e for e in checks.run_checks() if e.id == "studies.E001"]
