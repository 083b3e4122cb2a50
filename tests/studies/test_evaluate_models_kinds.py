"""`evaluate_models` chooses the models to score by what each kind's recipe declares it does (speech in,
motion out), not by the kind's name: a robot inverse model or a speech encoder registered under a new name
(EVALSITE_MODEL_KINDS, docs/models.md) is left out, a speech-driven generator under a new name is scored.

The corpus here has rows only (no utterances): whether a model was chosen shows in which refusal comes —
"no finished generator models" (none chosen) or "no utterances in split" (chosen, then nothing to score)."""
import pytest
from django.core.management import CommandError, call_command

from inference.models import KINDS_ENV
from studies.models import Corpus, TrainedModel
from tests.inference.kinds import register_kinds

pytestmark = pytest.mark.django_db


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """Three kinds under names the platform has never heard of, each a module of its own."""
    return register_kinds(tmp_path, monkeypatch,
                          {"robot_mlp": "inverse", "speech_encoder": "apc", "lab_blstm": "separate"}, prefix="own_")


@pytest.fixture
def corpus():
    return Corpus.objects.create(name="lab")


def _finished(corpus, name, kind):
    return TrainedModel.objects.create(name=name, kind=kind, corpus=corpus, status=TrainedModel.Status.DONE,
                                       checkpoint_path=f"models/{name}.pt")


def test_models_that_do_not_make_motion_from_speech_are_left_out_whatever_their_kind_is_called(registered, corpus):
    _finished(corpus, "lab-robot", "robot_mlp")
    _finished(corpus, "lab-encoder", "speech_encoder")
    with pytest.raises(CommandError, match="corpus lab has no finished generator models"):
        call_command("evaluate_models", "--corpus", "lab")
    with pytest.raises(CommandError, match="not finished generator models of lab: lab-robot$"):
        call_command("evaluate_models", "--corpus", "lab", "--models", "lab-robot")


def test_a_speech_driven_model_under_a_new_kind_name_is_scored(registered, corpus):
    _finished(corpus, "lab-robot", "robot_mlp")
    _finished(corpus, "lab-gen", "lab_blstm")
    with pytest.raises(CommandError, match="corpus lab has no utterances in split 'test'"):
        call_command("evaluate_models", "--corpus", "lab")


def test_a_model_whose_kind_is_not_registered_here_is_named(corpus, monkeypatch):
    monkeypatch.delenv(KINDS_ENV, raising=False)
    _finished(corpus, "lab-gen", "lab_blstm")
    with pytest.raises(CommandError, match=rf"model lab-gen: unknown model kind 'lab_blstm'.*{KINDS_ENV}"):
        call_command("evaluate_models", "--corpus", "lab")
