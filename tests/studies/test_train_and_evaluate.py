"""The researcher's path from a corpus to objective metrics: import_corpus → train → evaluate_models, and the
models page that shows training progress."""
import csv
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from studies.models import Corpus, TrainedModel

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture(scope="module")
def synthetic_folder(tmp_path_factory):
    from inference.synthetic import make_corpus

    folder = tmp_path_factory.mktemp("synthetic")
    make_corpus(folder, n_utterances=10, seed=5)
    return folder


@pytest.fixture
def corpus(synthetic_folder, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")  # the database rolls back after each test; files go too
    call_command("import_corpus", str(synthetic_folder), "--name", "synth", "--split-by", "utterance",
                 "--split", "0.6,0.2,0.2")
    return Corpus.objects.get(name="synth")


def test_train_then_evaluate_writes_the_model_by_region_table(corpus, capsys, settings):
    call_command("train", "--corpus", "synth", "--model", "joint", "--name", "synth-joint",
                 "--set", "train.max_epochs=3", "--set", "hidden=16")
    model = TrainedModel.objects.get(name="synth-joint")
    assert model.status == "done" and model.progress["fraction"] == 1.0
    assert (Path(settings.MEDIA_ROOT) / model.checkpoint_path).exists()
    assert model.progress["epochs"] == 3

    # A second `train` under the same name finds it done and changes nothing.
    call_command("train", "--corpus", "synth", "--model", "joint", "--name", "synth-joint")
    assert "already trained" in capsys.readouterr().out

    out = Path(settings.MEDIA_ROOT) / "eval"
    call_command("evaluate_models", "--corpus", "synth", "--out", str(out))
    with open(out / "objective_metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    models = {r["model"] for r in rows}
    assert models == {"synth-joint", "random_alignment", "still"}
    regions = {r["region"] for r in rows if r["model"] == "synth-joint"}
    assert {"arkit52:lower", "landmarks:lower", "landmarks:all"} <= regions
    md = (out / "objective_metrics.md").read_text()
    assert "synth-joint" in md and "random_alignment" in md
    # Generated clips are kept for reuse, named by utterance under the model's folder.
    test_names = set(corpus.utterances.filter(split="test").values_list("name", flat=True))
    kept = {p.stem for p in (Path(settings.MEDIA_ROOT) / "generated" / "synth-joint").rglob("*.npz")}
    assert kept == test_names


def test_bad_requests_exit_with_a_reason_and_create_nothing(corpus):
    with pytest.raises(CommandError, match="unknown model kind"):
        call_command("train", "--corpus", "synth", "--model", "transformer")
    with pytest.raises(CommandError, match="no corpus named"):
        call_command("train", "--corpus", "nope", "--model", "joint")
    with pytest.raises(CommandError, match="unknown setting"):
        call_command("train", "--corpus", "synth", "--model", "joint", "--set", "hiden=3")
    with pytest.raises(CommandError, match="no finished generator models"):
        call_command("evaluate_models", "--corpus", "synth")
    assert not TrainedModel.objects.exists()


def test_the_models_page_shows_progress_to_researchers_only(corpus, client, django_user_model):
    TrainedModel.objects.create(name="synth-glow", kind="glow", corpus=corpus, status="training",
                                progress={"stage": "flow", "epoch": 4, "fraction": 0.3, "best_val": 1.25})
    assert client.get("/models/").status_code == 302  # to the login page
    client.force_login(django_user_model.objects.create_user("r", password="x"))
    page = client.get("/models/").content.decode()
    assert "synth-glow" in page and "epoch 4" in page
    data = client.get("/models/synth-glow/progress.json").json()
    assert data["status"] == "training" and data["progress"]["fraction"] == 0.3
