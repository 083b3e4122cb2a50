"""studies/parallel.py: work spread over spawned processes that share the caller's database and folders —
management commands that wait for the one they need, the first failure stopping what had not started.
(Render jobs in several processes: tests/studies/test_render_study.py.)"""
import pytest
from django.core.management import CommandError

from studies.models import Corpus, TrainedModel
from studies.parallel import run_commands

pytestmark = [pytest.mark.pg_only, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def folders(tmp_path, settings):
    from inference.synthetic import make_corpus

    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.VAR_DIR = tmp_path / "var"
    make_corpus(tmp_path / "corpus", n_utterances=6, seed=3)
    return tmp_path


def _import(folders, name):
    return ("import_corpus", [str(folders / "corpus")], {"name": name, "split_by": "utterance",
                                                          "split": "0.5,0.25,0.25"})


def _train(corpus, name):
    return ("train", [], {"corpus": corpus, "kind": "joint", "name": name, "set": ["train.max_epochs=1", "hidden=8"]})


def test_a_command_waits_for_the_one_it_needs_in_another_process(folders):
    # Training needs the corpus the other process imports; listed first, it must still wait for it.
    run_commands([_train("par", "par-joint"), _import(folders, "par")], after={0: 1}, processes=2)
    model = TrainedModel.objects.get(name="par-joint")
    assert model.status == TrainedModel.Status.DONE and model.corpus.name == "par"
    assert (folders / "media" / model.checkpoint_path).is_file()  # written under this test's media folder


def test_the_first_failure_is_reported_and_stops_what_had_not_started(folders):
    with pytest.raises(CommandError, match=r"train: .*no-such-corpus"):
        run_commands([_train("no-such-corpus", "never"), _import(folders, "after-failure")], after={1: 0},
                     processes=2)
    assert not Corpus.objects.filter(name="after-failure").exists()
    assert not TrainedModel.objects.filter(name="never", status=TrainedModel.Status.DONE).exists()


def test_in_one_process_the_commands_still_run_after_the_one_they_need(folders):
    run_commands([_train("solo", "solo-joint"), _import(folders, "solo")], after={0: 1}, processes=1)
    assert TrainedModel.objects.get(name="solo-joint").status == TrainedModel.Status.DONE
