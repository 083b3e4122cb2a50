"""The demo's whole loop, stage by stage, with the platform's own commands: a SYNTHETIC corpus (espeak-ng
speech, motion driven by it) imported; the seed papers' models trained at demo size and scored; conditions
ground truth, random alignment, separate, joint, Glow, still and a lip-sync catch trial rendered on the
avatar and the simulated robot (plus attention checks and the A/V check); a study with Likert per face region, a MUSHRA-style page and a pairwise page;
attentive and careless bots through it over HTTP; the significance report; the stimulus bundle.

Every stage is skipped when its result is there and up to date (the corpus by its files' hashes, models
by name and settings, the study by its YAML, stimuli by their cells' render jobs, bots by the completed
sessions of the study's current version, the report and the bundle by a stamp of what they were made
from, kept in OUT/stamps.json), so a second run goes straight to serving. `PLANS` holds the two sizes.

The rated utterances are the shortest held-out (test) ones, and the bots watch every clip to its end (the
server checks), so their stage takes as long as a real session: the plans keep the pages short for that.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.management import call_command

from .models import Corpus, Participant, RenderJob, Response, Stimulus, Study, StudyReport, TrainedModel
from .parallel import default_processes, run_commands

# The study's conditions as written in its YAML (the model ones name this plan's trained models).
CONDITION_LINES = {
    "ground_truth": "ground_truth",
    "random_alignment": "random_alignment",
    "separate": "{{name: separate, kind: model, model: {prefix}-separate}}",
    "joint": "{{name: joint, kind: model, model: {prefix}-joint}}",
    "glow": "{{name: glow, kind: model, model: {prefix}-glow, temperature: 0.7, seed: 1}}",
    "still": "still",
    "catch": "{{name: sync-catch, kind: time_shift, ms: 600, catch: true}}",
}


@dataclass(frozen=True)
class DemoPlan:
    name: str
    n_utterances: int
    rated_utterances: int
    epochs: dict  # model kind -> train.max_epochs
    model_settings: dict = field(default_factory=dict)  # model kind -> extra --set pairs
    render: dict = field(default_factory=dict)
    conditions: tuple = ("ground_truth", "random_alignment", "separate", "joint", "glow", "still")
    mushra: tuple = ("ground_truth", "separate", "joint", "still")  # hidden reference, tests, anchor (avatar)
    pairwise: tuple = ("ground_truth", "separate", "joint")  # every pair of these (avatar)
    mushra_utterances: int = 4  # of the rated ones, per participant (rotated over participants)
    pairwise_utterances: int = 6  # a multiple of the pairs
    embodiments: tuple = ("avatar", "robot_sim")
    split: str = "0.6,0.2,0.2"  # train, validation, test (the rated utterances are test ones)
    attentive: int = 6
    careless: int = 2
    n_boot: int = 2000


PLANS = {
    "full": DemoPlan(
        name="demo-synthetic", n_utterances=72, rated_utterances=14,
        conditions=("ground_truth", "random_alignment", "separate", "joint", "glow", "still", "catch"),
        epochs={"separate": 40, "joint": 40, "forked": 30, "glow": 30, "apc": 10, "audio2landmark": 15,
                "inverse": 150},
        render={"width": 320, "height": 320, "fps": 25}, attentive=8, careless=3, n_boot=2000),
    "quick": DemoPlan(
        name="demo-synthetic-quick", n_utterances=20, rated_utterances=3, embodiments=("avatar",),
        conditions=("ground_truth", "joint", "still"), mushra=("ground_truth", "joint", "still"),
        pairwise=("ground_truth", "joint"), mushra_utterances=1, pairwise_utterances=1,  # bots watch in real time
        split="0.5,0.2,0.3",
        epochs={"separate": 2, "joint": 2, "forked": 2, "glow": 2, "apc": 1, "audio2landmark": 1, "inverse": 5},
        model_settings={"glow": ["window=40", "train.crop_frames=40", "steps=2"],
                        "audio2landmark": ["finetune_epochs=1"]},
        render={"width": 96, "height": 96, "fps": 10}, attentive=1, careless=1, n_boot=200),
}
# Trained in this order, side by side; separate and joint listen to the same features, so they do not start
# together (the second finds the first's features cached).
MODEL_ORDER = ("separate", "forked", "joint", "glow", "apc", "audio2landmark", "inverse")
MODEL_STARTS_FROM = {"audio2landmark": "apc"}  # fine-tuned from the APC speech encoder's weights


def study_text(plan: DemoPlan, utterances: list[str]) -> str:
    """The demo study's YAML, naming this plan's corpus, models and rated (held-out) utterances."""
    template = (Path(__file__).parent / "specs" / "demo_full.yaml").read_text()
    render = "{" + ", ".join(f"{k}: {v}" for k, v in plan.render.items()) + "}"
    return template.format(slug=plan.name.replace("demo-synthetic", "demo-talking-faces"), corpus=plan.name,
                           utterances=", ".join(utterances), render=render,
                           embodiments=", ".join(plan.embodiments),
                           conditions="\n".join("    - " + CONDITION_LINES[c].format(prefix=plan.name)
                                                for c in plan.conditions),
                           mushra=", ".join(plan.mushra), pairwise=", ".join(plan.pairwise),
                           mushra_utterances=plan.mushra_utterances, pairwise_utterances=plan.pairwise_utterances,
                           quota=plan.attentive + plan.careless + 20)  # bots fill none of it: room for people trying it


@dataclass
class DemoResult:
    study_slug: str
    out_dir: Path
    report_id: int | None = None
    timings: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)


class DemoPipeline:
    """Runs the stages in order; `say(text)` announces each stage that has work to do (the commands it calls
    show their own progress bars)."""

    def __init__(self, plan: DemoPlan, *, out_dir: Path | None = None, say=print, owner=None):
        self.plan = plan
        self.out = Path(out_dir or Path(settings.VAR_DIR) / plan.name)
        self.say = say
        self.owner = owner
        self.result = DemoResult(study_slug="", out_dir=self.out)

    def run(self) -> DemoResult:
        self.out.mkdir(parents=True, exist_ok=True)
        for stage in (self.corpus, self.models, self.evaluate, self.study, self.render, self.bots, self.report,
                      self.bundle):
            started = time.perf_counter()
            done = stage()
            self.result.timings[stage.__name__] = round(time.perf_counter() - started, 1)
            if done is False:
                self.result.skipped.append(stage.__name__)
        return self.result

    # --- stages (each returns False when it found its result already made) -------------------------------
    def corpus(self):
        from inference.synthetic import make_corpus

        folder = self.out / "corpus"
        title = (f"[1/8] synthetic corpus: {self.plan.n_utterances} utterances (speech by espeak-ng, motion made "
                 "from the speech: SYNTHETIC, not recorded)")
        known = Corpus.objects.filter(name=self.plan.name).exists() and "corpus" in self._stamps()
        if not known:
            self.say(title)
        rows = make_corpus(folder, n_utterances=self.plan.n_utterances, seed=0)  # quick when its files are there
        files = [folder / "metadata.csv"] + [Path(row[key]) for row in rows for key in ("wav", "motion")]
        stamp = _stamp(files) + ":" + self.plan.split
        if known and self._stamp_is("corpus", stamp):
            return False
        if known:  # made by another version of the generator: what was made from the import stays consistent
            self.say(f"note: the synthetic corpus's files differ from those imported into {self.plan.name}; the "
                     f"demo keeps the imported corpus and all made from it (delete {self.out} and the database "
                     "to start afresh)")
            self._stamp_set("corpus", stamp)
            return False
        call_command("import_corpus", str(folder), name=self.plan.name, split_by="utterance",
                     split=self.plan.split, seed=0, replace=Corpus.objects.filter(name=self.plan.name).exists())
        self._stamp_set("corpus", stamp)

    def _model_name(self, kind: str) -> str:
        return f"{self.plan.name}-{kind}"

    def models(self):
        """Train the models not trained yet with these settings, side by side in one process per core (each
        with its share of the cores: small recurrent networks gain little from a second thread)."""
        todo = []
        for kind in MODEL_ORDER:
            name = self._model_name(kind)
            options = [f"train.max_epochs={self.plan.epochs[kind]}", *self.plan.model_settings.get(kind, [])]
            model = TrainedModel.objects.filter(name=name).first()
            starts_from = MODEL_STARTS_FROM.get(kind)
            if model is not None and model.status == TrainedModel.Status.DONE and \
                    self._stamp_is(name, json.dumps(options)) and starts_from not in {k for k, _, _ in todo}:
                continue
            todo.append((kind, name, options))
        if not todo:
            return False
        # Failed, interrupted or trained with other settings (or from a model trained again): start again,
        # a model before the one it started from (which it protects).
        for _, name, _ in reversed(todo):
            TrainedModel.objects.filter(name=name).delete()
        processes = min(default_processes(), len(todo))
        self.say(f"[2/8] training {len(todo)} models ({', '.join(k for k, _, _ in todo)}), {processes} at a time")
        commands = [("train", [], {"corpus": self.plan.name, "kind": kind, "name": name, "set": options,
                               **({"init_from": self._model_name(MODEL_STARTS_FROM[kind])}
                                  if kind in MODEL_STARTS_FROM else {})})
                    for kind, name, options in todo]
        kinds = [kind for kind, _, _ in todo]
        after = {kinds.index(kind): kinds.index(first) for kind, first in MODEL_STARTS_FROM.items()
                 if kind in kinds and first in kinds}
        try:
            run_commands(commands, after=after, processes=processes)
        finally:  # what finished is kept, also when another model failed
            for _, name, options in todo:
                if TrainedModel.objects.filter(name=name, status=TrainedModel.Status.DONE).exists():
                    self._stamp_set(name, json.dumps(options))
        return True

    def metrics_table(self) -> Path:
        """Where `evaluate_models` writes by default, and where the study's report looks for it."""
        return Path(settings.MEDIA_ROOT) / "reports" / self.plan.name / "objective_metrics.md"

    def evaluate(self):
        stamp = _stamp_models(self.plan.name)
        if self.metrics_table().exists() and self._stamp_is("metrics", stamp):
            return False
        self.say("[3/8] objective metrics of every model on the held-out utterances")
        call_command("evaluate_models", corpus=self.plan.name)
        self._stamp_set("metrics", stamp)

    def study(self):
        """Write the study's YAML (its stimuli are rendered next; the study is loaded once they exist)."""
        from .demo import av_check_utterance_ensure

        corpus = Corpus.objects.get(name=self.plan.name)
        av_check_utterance_ensure(corpus)
        held_out = corpus.utterances.filter(split="test").exclude(motion_path="").order_by("duration_s", "name")
        names = list(held_out.values_list("name", flat=True)[:self.plan.rated_utterances])
        if len(names) < self.plan.rated_utterances:
            raise RuntimeError(f"the corpus's test split has {len(names)} utterances with motion; the plan rates "
                               f"{self.plan.rated_utterances} (raise n_utterances or the test share of the split)")
        path, text = self.out / "study.yaml", study_text(self.plan, names)
        if path.exists() and path.read_text() == text:
            return False
        self.say(f"[4/8] the demo study (Likert per face region, MUSHRA-style sliders, pairs): {path}")
        path.write_text(text)

    def render(self):
        """Render what the study needs and is not made yet, then load the study (a new version only when its
        YAML changed) and open it."""
        from . import services
        from .rendering import freeze_variants, render_jobs_plan
        from .spec import parse_spec

        text = (self.out / "study.yaml").read_text()
        pending = [j for j in render_jobs_plan(freeze_variants(parse_spec(text))) if j.status != RenderJob.Status.DONE]
        if pending:
            self.say(f"[5/8] rendering {len(pending)} stimuli: every condition on "
                     f"{' and '.join(self.plan.embodiments)}, plus attention checks")
            call_command("render_study", str(self.out / "study.yaml"), retry_failed=True)
        version, created = services.study_load(text=text, owner=self.owner)
        if version.study.status != "live":
            services.study_set_status(study=version.study, status="live")
        self.result.study_slug = version.study.slug
        return bool(pending or created) or False

    def bots(self):
        wanted = self.plan.attentive + self.plan.careless
        study = Study.objects.get(slug=self.result.study_slug)
        version = study.current_version

        def completed() -> int:
            return Participant.objects.filter(version=version, source="bot",
                                              status=Participant.Status.COMPLETED).count()

        if completed() >= wanted:
            return False
        self.say(f"[6/8] {self.plan.attentive} attentive + {self.plan.careless} careless bot participants through "
                 "the study over HTTP, all at once (each watches every clip to its end, as the server checks)")
        call_command("run_bots", self.result.study_slug, mix=f"attentive={self.plan.attentive},"
                     f"careless={self.plan.careless}", serve=True)
        if completed() < wanted:
            raise RuntimeError(f"only {completed()} of the {wanted} bots completed the study (see above why)")

    def report(self):
        """The significance report, made as the dashboard's button makes it (so the site serves it), in this
        process; it is made again only when responses came in since."""
        from .reporting import report_request, report_run

        stamp = _stamp_responses(self.result.study_slug)
        done = StudyReport.objects.filter(study__slug=self.result.study_slug, status=StudyReport.Status.DONE)
        kept = done.filter(pk=self._stamps().get("report_id")).first()
        if kept is not None and self._stamp_is("report", stamp):
            self.result.report_id = kept.pk
            return False
        self.say("[7/8] significance report")
        study = Study.objects.get(slug=self.result.study_slug)
        # The demo's participants are its bots, which a study's report leaves out unless asked for.
        report = report_request(study=study, user=self.owner, queue=False, include_pilot=True,
                                options={"n_boot": self.plan.n_boot, "bt_boot": min(self.plan.n_boot, 1000)})
        report = report_run(report_id=report.pk)
        if report.status != StudyReport.Status.DONE:
            raise RuntimeError(f"the demo's report failed: {report.error}")
        self.result.report_id = report.pk
        self._stamp_set("report_id", report.pk)
        self._stamp_set("report", stamp)

    def bundle(self):
        out = self.out / "stimuli.zip"
        study = Study.objects.get(slug=self.result.study_slug)
        newest = Stimulus.objects.filter(utterance__corpus__name=self.plan.name).order_by("-id").first()
        made_from = f"v{study.current_version.number}:s{newest.pk if newest else 0}"
        if out.exists() and self._stamp_is("bundle", f"{made_from}:{_stamp([out])}"):
            return False
        self.say("[8/8] stimulus bundle (videos, manifest, study YAML, checksums)")
        call_command("export_stimuli", self.result.study_slug, out=str(out), force=True)
        self._stamp_set("bundle", f"{made_from}:{_stamp([out])}")

    # --- stamps: what a stage's result was made from -----------------------------------------------------
    def _stamps(self) -> dict:
        path = self.out / "stamps.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _stamp_is(self, key: str, value) -> bool:
        return self._stamps().get(key) == value

    def _stamp_set(self, key: str, value) -> None:
        stamps = {**self._stamps(), key: value}
        (self.out / "stamps.json").write_text(json.dumps(stamps, indent=1, sort_keys=True))


def _stamp(paths) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _stamp_models(corpus: str) -> str:
    rows = TrainedModel.objects.filter(corpus__name=corpus, status=TrainedModel.Status.DONE).order_by("name")
    return hashlib.sha256(json.dumps([(m.name, m.checkpoint_path, str(m.updated_at)) for m in rows]).encode()).hexdigest()


def _stamp_responses(slug: str) -> str:
    study = Study.objects.get(slug=slug)
    last = Response.objects.filter(participant__study=study).order_by("-id").values_list("id", flat=True).first()
    return f"v{study.current_version.number}:r{last}"
