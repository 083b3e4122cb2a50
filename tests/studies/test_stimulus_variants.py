"""Stimuli are keyed by the study's render settings (its variant): two studies that render the same cells at
different sizes each get, show and count their own videos; the same settings written differently reuse them;
attention checks on another rating scale get their own clips; existing rows get their variant from the
render jobs that made them."""
import importlib
import io
from pathlib import Path

import pytest
from django.apps import apps as django_apps
from django.conf import settings as django_settings
from django.core.management import call_command
from django.urls import reverse

from studies import selectors, services
from studies.models import Condition, Corpus, Participant, RenderJob, Stimulus, Study, TrialStimulus
from studies.spec import RENDER_KEYS, parse_spec
from studies.variants import cell_variant, study_variants

pytestmark = pytest.mark.django_db

CORPUS = "synth-variants"
SPEC = """\
slug: {slug}
title: Variant test
stimuli:
  corpus: synth-variants
  conditions: [ground_truth, still]
  embodiments: [avatar]
  utterances: [syn000, syn001]
{render}questions:
  naturalness: {{type: likert, prompt: "How natural is the motion?", points: {points}}}
pages:
  - type: trials
    question: naturalness
    attention_checks: {attention}
  - type: completion
"""


def _spec_text(slug, render, *, points=5, attention=0):
    return SPEC.format(slug=slug, render=f"  render: {render}\n" if render else "", points=points,
                       attention=attention)


def _write(tmp_path, slug, render, **kw) -> Path:
    path = tmp_path / f"{slug}.yaml"
    path.write_text(_spec_text(slug, render, **kw))
    return path


# --- the rule ---------------------------------------------------------------------------------------------


def test_default_settings_have_the_empty_variant_and_others_a_stable_key(monkeypatch):
    default = parse_spec(_spec_text("plain", None))
    written_out = parse_spec(_spec_text("explicit", "{width: 512, height: 512, fps: 25.0, lighting: studio}"))
    assert study_variants(default) == ("", "") == study_variants(written_out)
    assert cell_variant(dict(RENDER_KEYS)) == ""

    small = parse_spec(_spec_text("sa", "{width: 96, height: 96, fps: 10}"))
    same = parse_spec(_spec_text("sb", "{fps: 10.0, height: 96, width: 96, background: [226, 231, 238]}"))
    other = parse_spec(_spec_text("sc", "{width: 128, height: 96, fps: 10}"))
    variant = cell_variant(small)
    assert variant.startswith("r") and len(variant) == 13
    assert cell_variant(same) == variant != cell_variant(other)
    # A render job's settings (what job_settings stores) give the variant of the spec they came from,
    # whatever else they carry (a folder of uploads) and in whatever key order.
    job_settings = {"uploads": "/somewhere", "attention_scale": 5, **dict(reversed(list(
        {**RENDER_KEYS, "width": 96, "height": 96, "fps": 10.0}.items())))}
    assert cell_variant(job_settings) == variant
    # A render key added later with its default leaves the variant as it was (stored stimuli stay found);
    # a study that sets it to something else gets another.
    from studies import variants

    with_new_key = {**RENDER_KEYS, "grain": 0}
    monkeypatch.setattr(variants, "RENDER_KEYS", with_new_key)
    monkeypatch.setattr(variants, "_DEFAULT_SETTINGS", {k: variants._normal(v) for k, v in with_new_key.items()})
    assert cell_variant(small) == variant and cell_variant(default) == ""
    grainy = {"width": 96, "height": 96, "fps": 10, "grain": 3}
    assert cell_variant(grainy) not in (variant, "")
    monkeypatch.undo()
    # Only the rating scale of attention checks enters their variant, and only when it is not 5 points.
    assert cell_variant(small, "attention_check") == variant
    seven = parse_spec(_spec_text("sd", "{width: 96, height: 96, fps: 10}", points=7))
    assert cell_variant(seven) == variant and cell_variant(seven, "ground_truth") == variant
    assert cell_variant(seven, "attention_check") == f"{variant}-a7"
    assert cell_variant(parse_spec(_spec_text("se", None, points=7)), "attention_check") == "a7"
    assert len(cell_variant(seven, "attention_check")) <= Stimulus._meta.get_field("variant").max_length


def _copy(stimulus: Stimulus, **changes) -> Stimulus:
    fields = {f.name: getattr(stimulus, f.name) for f in Stimulus._meta.fields if f.name not in ("id", "token")}
    return Stimulus.objects.create(**{**fields, **changes})


def test_attention_checks_on_another_scale_are_their_own_unless_none_were_made_for_it(demo_study):
    """The quick demo's placeholder attention clips (variant "", asking for the lowest rating) serve a 7- or
    3-point study until clips for its scale exist; a clip whose number is off the scale never does."""
    corpus = Corpus.objects.get(name=demo_study.current_version.spec["stimuli"]["corpus"])
    spec = parse_spec(_spec_text("three", None, points=3).replace(CORPUS, corpus.name)
                      .replace("[syn000, syn001]", "all"))
    placeholders = list(Stimulus.objects.filter(utterance__corpus=corpus, condition__kind="attention_check"))
    assert placeholders and {s.variant for s in placeholders} == {""}
    assert {s.pk for s in selectors.attention_check_stimuli(spec, corpus)} == {s.pk for s in placeholders}

    off_scale = placeholders[0]
    Stimulus.objects.filter(pk=off_scale.pk).update(expected_answer={"value": 5})
    assert off_scale.pk not in {s.pk for s in selectors.attention_check_stimuli(spec, corpus)}

    made_for_three = _copy(placeholders[1], variant="a3", expected_answer={"value": 2})
    assert [s.pk for s in selectors.attention_check_stimuli(spec, corpus)] == [made_for_three.pk]
    five = parse_spec(_spec_text("five", None, points=5).replace(CORPUS, corpus.name)
                      .replace("[syn000, syn001]", "all"))
    assert made_for_three.pk not in {s.pk for s in selectors.attention_check_stimuli(five, corpus)}


# --- rendering and serving ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_folder(tmp_path_factory):
    from inference.synthetic import make_corpus

    folder = tmp_path_factory.mktemp("synthetic-variants")
    make_corpus(folder, n_utterances=4, seed=3)
    return folder


@pytest.fixture
def corpus(synthetic_folder, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.VAR_DIR = tmp_path / "var"
    call_command("import_corpus", str(synthetic_folder), "--name", CORPUS, "--split-by", "utterance",
                 "--split", "0.5,0.25,0.25")


def _tokens(spec: dict) -> set[str]:
    return set(Stimulus.objects.filter(selectors.in_study_variant(spec), utterance__corpus__name=CORPUS)
               .values_list("token", flat=True))


def _served_tokens(client, study: Study) -> set[str]:
    """Start a participant of the study through its entry link; the tokens of every video in their trials."""
    client.get(reverse("entry", args=[study.public_token]))
    participant = Participant.objects.get(study=study)
    return set(TrialStimulus.objects.filter(trial__participant=participant)
               .values_list("stimulus__token", flat=True))


@pytest.mark.slow
def test_two_studies_on_the_same_cells_each_get_show_and_count_their_own_videos(corpus, tmp_path, client,
                                                                                  django_user_model):
    from render.checks import check_stimulus

    big = _write(tmp_path, "variant-big", "{width: 128, height: 128, fps: 10}")
    small = _write(tmp_path, "variant-small", "{width: 96, height: 96, fps: 10}")
    call_command("render_study", str(big))
    call_command("render_study", str(small))
    big_spec, small_spec = parse_spec(big.read_text()), parse_spec(small.read_text())

    # Each cell (2 utterances x 2 conditions) has one video per study, each of its study's size.
    made = Stimulus.objects.filter(utterance__corpus__name=CORPUS)
    assert made.count() == 8 and RenderJob.objects.filter(status="done").count() == 8
    for spec, size in ((big_spec, 128), (small_spec, 96)):
        own = made.filter(variant=cell_variant(spec))
        assert own.count() == 4
        for stimulus in own:
            facts = check_stimulus(Path(django_settings.MEDIA_ROOT) / stimulus.file)  # ffprobe
            assert (facts.width, facts.height) == (size, size) == (stimulus.width, stimulus.height)
    big_tokens, small_tokens = _tokens(big_spec), _tokens(small_spec)
    assert len(big_tokens) == len(small_tokens) == 4 and not big_tokens & small_tokens

    # Both load (every stimulus of each exists in its own variant); each participant sees their study's videos.
    studies = {}
    for path in (big, small):
        version, _ = services.study_load(text=path.read_text())
        studies[path] = services.study_set_status(study=version.study, status="live")
    for path, own, other in ((big, big_tokens, small_tokens), (small, small_tokens, big_tokens)):
        served = _served_tokens(client, studies[path])
        assert served and served <= own and not served & other

    # The dashboard counts and the gallery shows each study's own videos only.
    client.force_login(django_user_model.objects.create_superuser("boss", "b@example.org", "x"))
    for path, own, other in ((big, big_tokens, small_tokens), (small, small_tokens, big_tokens)):
        slug = studies[path].slug
        assert "4 of 4 made" in client.get(f"/r/{slug}/").content.decode()
        gallery = client.get(f"/r/{slug}/gallery/?utterance=syn001").content.decode()
        assert gallery.count("<video") == 2
        assert sum(token in gallery for token in own) == 2 and not any(token in gallery for token in other)


@pytest.mark.slow
def test_the_same_settings_written_differently_reuse_the_videos(corpus, tmp_path):
    first = _write(tmp_path, "variant-first", "{width: 96, height: 96, fps: 10}")
    call_command("render_study", str(first))
    tokens = set(Stimulus.objects.filter(utterance__corpus__name=CORPUS).values_list("token", flat=True))
    jobs = RenderJob.objects.count()
    assert len(tokens) == 4 and jobs == 4

    again = _write(tmp_path, "variant-again", "{fps: 10.0, lighting: studio, height: 96, width: 96}")
    out = io.StringIO()
    call_command("render_study", str(again), stdout=out)
    assert "4 made, 0 to render" in out.getvalue()
    assert set(Stimulus.objects.filter(utterance__corpus__name=CORPUS).values_list("token", flat=True)) == tokens
    assert RenderJob.objects.count() == jobs


@pytest.mark.slow
def test_a_study_on_another_scale_shares_the_rated_videos_and_gets_its_own_attention_checks(corpus, tmp_path):
    five = _write(tmp_path, "variant-five", "{width: 96, height: 96, fps: 10}", attention=1)
    seven = _write(tmp_path, "variant-seven", "{width: 96, height: 96, fps: 10}", points=7, attention=1)
    call_command("render_study", str(five))
    rated = set(Stimulus.objects.exclude(condition__kind="attention_check").values_list("token", flat=True))
    call_command("render_study", str(seven))

    assert set(Stimulus.objects.exclude(condition__kind="attention_check").values_list("token", flat=True)) == rated
    checks = Stimulus.objects.filter(condition__kind="attention_check", utterance__corpus__name=CORPUS)
    seven_spec = parse_spec(seven.read_text())
    variant, attention_variant = study_variants(seven_spec)
    assert attention_variant == f"{variant}-a7"
    assert checks.filter(variant=variant).count() == checks.filter(variant=attention_variant).count() == 2
    assert all(1 <= s.expected_answer["value"] <= 7 for s in checks.filter(variant=attention_variant))
    assert all(1 <= s.expected_answer["value"] <= 5 for s in checks.filter(variant=variant))
    version, _ = services.study_load(text=seven.read_text())
    chosen = selectors.attention_check_stimuli(version.spec, checks.first().utterance.corpus)
    assert {s.variant for s in chosen} == {attention_variant}


# --- existing rows --------------------------------------------------------------------------------------


def _migration():
    return importlib.import_module("studies.migrations.0008_stimulus_variants")


def _old_row(corpus_name, condition: Condition, settings: dict | None, *, width=96):
    """A stimulus as older code left it (variant ""), with the render job that made it when `settings`."""
    from studies.models import Corpus, Utterance

    corpus, _ = Corpus.objects.get_or_create(name=corpus_name)
    utterance = Utterance.objects.create(corpus=corpus, name=f"u{Utterance.objects.count()}")
    stimulus = Stimulus.objects.create(utterance=utterance, condition=condition, embodiment="avatar",
                                       file="stimuli/x.mp4", sha256="0" * 64, duration_s=1.0, width=width,
                                       height=width, fps=10, video_codec="h264")
    job = None
    if settings is not None:
        job = RenderJob.objects.create(utterance=utterance, condition=condition, embodiment="avatar",
                                       settings=settings, status="done", stimulus=stimulus)
    return stimulus, job


def test_the_migration_gives_existing_rows_the_variant_of_their_render_jobs():
    still, _ = Condition.objects.get_or_create(name="still", defaults={"kind": "still"})
    attention, _ = Condition.objects.get_or_create(name="attention-check", defaults={"kind": "attention_check"})
    small_settings = {**RENDER_KEYS, "width": 96, "height": 96, "fps": 10, "attention_scale": 5}
    rendered, rendered_job = _old_row("old-corpus", still, small_settings)
    default, default_job = _old_row("old-corpus", still, {**RENDER_KEYS, "attention_scale": 5}, width=512)
    check, check_job = _old_row("old-corpus", attention, {**RENDER_KEYS, "attention_scale": 7}, width=512)
    placeholder, _ = _old_row("old-corpus", still, None)

    _migration().variants_from_render_jobs(django_apps)

    small = cell_variant(parse_spec(_spec_text("sx", "{width: 96, height: 96, fps: 10}")))
    for row, variant in ((rendered, small), (rendered_job, small), (default, ""), (default_job, ""),
                         (check, "a7"), (check_job, "a7"), (placeholder, "")):
        row.refresh_from_db()
        assert row.variant == variant, row


@pytest.mark.pg_only
@pytest.mark.django_db(transaction=True)
def test_the_migration_runs_on_a_database_of_the_previous_schema():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before = ("studies", "0007_trialstimulus_open_reference_token")
    executor = MigrationExecutor(connection)
    executor.migrate([before])
    old = executor.loader.project_state([before]).apps
    corpus = old.get_model("studies", "Corpus").objects.create(name="pre-variants")
    utterance = old.get_model("studies", "Utterance").objects.create(corpus=corpus, name="u0")
    condition = old.get_model("studies", "Condition").objects.create(name="pre-variants-still", kind="still")
    stimuli = old.get_model("studies", "Stimulus").objects
    made = stimuli.create(utterance=utterance, condition=condition, embodiment="avatar", token="t" * 20,
                          file="stimuli/t.mp4", sha256="0" * 64, duration_s=1.0, width=96, height=96, fps=10,
                          video_codec="h264")
    stimuli.create(utterance=utterance, condition=condition, embodiment="robot_sim", token="s" * 20,
                           file="stimuli/s.mp4", sha256="1" * 64, duration_s=1.0, width=512, height=512, fps=25,
                           video_codec="h264")
    settings = {**RENDER_KEYS, "width": 96, "height": 96, "fps": 10, "attention_scale": 5}
    old.get_model("studies", "RenderJob").objects.create(utterance=utterance, condition=condition,
                                                         embodiment="avatar", settings=settings, status="done",
                                                         stimulus=made)
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    expected = cell_variant(settings)
    assert expected and Stimulus.objects.get(token="t" * 20).variant == expected
    assert RenderJob.objects.get(stimulus__token="t" * 20).variant == expected
    assert Stimulus.objects.get(token="s" * 20).variant == ""
    # The cell may now hold a video of another variant beside it.
    _copy(Stimulus.objects.get(token="t" * 20), variant="")


@pytest.mark.slow
def test_a_loaded_study_keeps_its_videos_when_the_platform_render_defaults_change(corpus, tmp_path, client,
                                                                                   monkeypatch):
    from studies import variants

    path = _write(tmp_path, "variant-frozen", "{width: 96, height: 96, fps: 10}")
    call_command("render_study", str(path))
    version, _ = services.study_load(text=path.read_text())
    study = services.study_set_status(study=version.study, status="live")
    own = _tokens(version.spec)
    assert len(own) == 4 and version.spec["stimuli"]["resolved_variants"] == list(study_variants(version.spec))

    # A later platform renders something else by default (here: another background): a study file with the
    # same text now means other videos, but the loaded study goes on with the ones it was loaded with.
    changed = {**RENDER_KEYS, "background": [10, 10, 10]}
    monkeypatch.setattr(variants, "RENDER_KEYS", changed)
    monkeypatch.setattr(variants, "_DEFAULT_SETTINGS", {k: variants._normal(v) for k, v in changed.items()})
    assert cell_variant(parse_spec(path.read_text())) != study_variants(version.spec)[0]
    served = _served_tokens(client, study)
    assert served and served <= own
    jobs = RenderJob.objects.count()
    call_command("render_study", study.slug)  # the loaded study: nothing to render
    assert RenderJob.objects.count() == jobs and _tokens(version.spec) == own
