"""What a model kind declares it does (Recipe.inputs, outputs, sampling), which the commands read instead
of the kind's name: the built-in kinds declare it truly, a kind registered under a new name keeps what its
recipe says, and a declaration the platform does not know is refused naming the kind."""
import dataclasses

import pytest

from inference.models import BUILT_IN_KINDS, ModelKindError, Recipe, recipe
from tests.inference.kinds import register_kinds


def test_the_built_in_kinds_declare_what_they_consume_and_produce():
    declared = {kind: (recipe(kind).inputs, recipe(kind).outputs, recipe(kind).sampling) for kind in BUILT_IN_KINDS}
    assert declared == {
        "separate": ("speech", "motion", False),
        "joint": ("speech", "motion", False),
        "forked": ("speech", "motion", False),
        "glow": ("speech", "motion", True),
        "apc": ("speech", "features", False),
        "audio2landmark": ("speech", "motion", False),
        "inverse": ("motion", "motion", False),
    }
    generators = {kind for kind in BUILT_IN_KINDS if recipe(kind).generates_motion_from_speech}
    assert generators == {"separate", "joint", "forked", "glow", "audio2landmark"}


def test_a_kind_registered_under_a_new_name_is_judged_by_its_recipe(tmp_path, monkeypatch):
    register_kinds(tmp_path, monkeypatch, {"robot_mlp": "inverse", "speech_encoder": "apc", "flow": "glow",
                                           "blstm": "separate"})
    assert not recipe("robot_mlp").generates_motion_from_speech
    assert recipe("robot_mlp").inputs == "motion"
    assert not recipe("speech_encoder").generates_motion_from_speech
    assert recipe("flow").generates_motion_from_speech and recipe("flow").sampling
    assert recipe("blstm").generates_motion_from_speech and not recipe("blstm").sampling


@pytest.mark.parametrize("field, value", [("inputs", "video"), ("outputs", "clip")])
def test_an_unknown_declaration_is_refused_naming_the_kind(field, value):
    base = recipe("separate")
    with pytest.raises(ModelKindError, match=rf"'mine'.*{field}={value!r}.*one of"):
        dataclasses.replace(base, kind="mine", **{field: value})
    with pytest.raises(ModelKindError, match=field):
        Recipe(**{**{f.name: getattr(base, f.name) for f in dataclasses.fields(Recipe)}, field: value})
