"""A study's significance report: its responses as the tidy frame, each question's design, the models'
objective metrics, the analysis (studies/analysis/run.py) and the written report (studies/reports.py).

Shared by `manage.py report SLUG --out DIR`, the dashboard's "Write a report" button and its Celery task
(`report_study`, on the inference workers). Dashboard reports live under REPORTS_ROOT/<slug>/<id>/,
outside MEDIA_ROOT, and are served to the study's researchers only.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .models import Condition, Study, StudyReport, TrainedModel
from .selectors import EXPORT_COLUMNS, export_rows

Progress = Callable[[str, float], None]
logger = logging.getLogger(__name__)

# analysis settings a researcher may choose (dashboard form, `report` options); the rest are the defaults
OPTION_KEYS = ("alpha", "correction", "zero_method", "n_boot", "bt_boot", "seed", "ci_level", "power")
# Kept beside them in a dashboard report's options: which sessions it reads, not how it analyses them.
INCLUDE_PILOT = "include_pilot"


class ReportError(ValueError):
    """A report that cannot be made; the message says why."""


def study_frame(study: Study, *, include_pilot: bool = False):
    """The study's responses, one row per rating (the columns of `export_responses`)."""
    import pandas as pd

    rows = list(export_rows(study, include_pilot=include_pilot))
    return pd.DataFrame(rows, columns=EXPORT_COLUMNS)


def question_designs(spec: dict) -> dict[str, str]:
    """question → design: likert within participants, a slider with a hidden reference MUSHRA (with
    BS.1534 post-screening), another slider within participants, pairwise as pairwise preferences."""
    designs = {}
    for key, question in spec["questions"].items():
        kind = question.get("type")
        if kind == "pairwise":
            designs[key] = "pairwise"
        elif kind == "slider" and question.get("hidden_reference"):
            designs[key] = "mushra"
        else:
            designs[key] = "within"
    return designs


def exclusion_rules(spec: dict) -> dict:
    """The study's own quality rules (spec `quality:`), applied again, in the fixed order, by the analysis."""
    quality = spec.get("quality") or {}
    return {
        "max_attention_failures": quality.get("max_attention_failures", 0),
        "max_catch_failures": 0,
        "min_watch_fraction": quality.get("min_watch_fraction"),
        "min_median_answer_ms": quality.get("min_median_answer_ms"),
        "max_identical_fraction": quality.get("max_identical_fraction"),
        "bs1534": True,
    }


def objective_metrics(spec: dict) -> list[dict]:
    """The objective-metrics rows (`evaluate_models`) of the models behind the study's conditions."""
    names = [c if isinstance(c, str) else c.get("name") for c in spec["stimuli"]["conditions"]]
    by_model = {}
    for condition in Condition.objects.filter(name__in=names, kind=Condition.Kind.MODEL):
        model = condition.params.get("model")
        if model:
            by_model[model] = condition.name
    if not by_model:
        return []
    rows = []
    models = TrainedModel.objects.filter(name__in=list(by_model)).select_related("corpus")
    for corpus_name in sorted({m.corpus.name for m in models}):
        table = Path(settings.MEDIA_ROOT) / "reports" / corpus_name / "objective_metrics.csv"
        if not table.exists():
            continue
        with table.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                label = next(iter(row.values()), "")
                metrics = {k: _number(v) for k, v in list(row.items())[1:]}
                rows.append({"model": label, "kind": next((m.kind for m in models if m.name == label), "baseline"),
                             "condition": by_model.get(label, ""), "corpus": corpus_name, "metrics": metrics})
    return rows


def _number(text: str):
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def spec_sha256(study: Study) -> str:
    return hashlib.sha256(study.current_version.spec_yaml.encode("utf-8")).hexdigest()


def build_report(study: Study, out_dir: Path, *, options: dict | None = None, include_pilot: bool = False,
                 progress: Progress | None = None) -> dict:
    """Analyse the study's responses now and write the report into `out_dir`; returns {"summary", "files"}.
    Raises AnalysisError for settings the researcher must fix."""
    from .analysis.run import run_analysis
    from .reports import write_report

    say = progress or (lambda stage, fraction: None)
    options = dict(options or {})
    unknown = set(options) - set(OPTION_KEYS)
    if unknown:
        raise ReportError(f"unknown report option(s) {', '.join(sorted(unknown))}; known: {', '.join(OPTION_KEYS)}")
    spec = study.current_version.spec
    say("reading the responses", 0.0)
    snapshot = timezone.now()
    frame = study_frame(study, include_pilot=include_pilot)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = run_analysis(
        frame, design=question_designs(spec), settings={**options, "rules": exclusion_rules(spec)},
        out_dir=out_dir, title=study.title,
        source={"kind": "study", "slug": study.slug, "version": study.current_version.number,
                "include_pilot": include_pilot},
        spec_sha256=spec_sha256(study), snapshot_at=snapshot.isoformat(timespec="seconds"),
        objective_metrics=objective_metrics(spec),
        progress=lambda stage, fraction: say(stage, 0.05 + 0.85 * fraction),
    )
    say("writing the report", 0.92)
    files = write_report(summary, out_dir)
    say("done", 1.0)
    return {"summary": summary, "files": files, "snapshot_at": snapshot}


# -- reports made from the dashboard -------------------------------------------------------------------------

def report_request(*, study: Study, user=None, options: dict | None = None, include_pilot: bool = False,
                   queue: bool = True) -> StudyReport:
    """Record a report to make and queue it on the workers (after the transaction commits); with
    `queue=False` the caller makes it itself (`report_run`), as `manage.py demo` does. `include_pilot` adds
    the preview, pilot and bot sessions (the demo's report is of its bots); it is kept with the options."""
    from .tasks import report_study

    options = {k: v for k, v in (options or {}).items() if v not in (None, "")}
    unknown = set(options) - set(OPTION_KEYS)
    if unknown:
        raise ReportError(f"unknown report option(s) {', '.join(sorted(unknown))}")
    if include_pilot:
        options[INCLUDE_PILOT] = True
    report = StudyReport.objects.create(study=study, options=options, created_by=user,
                                        progress={"stage": "queued", "fraction": 0.0})
    if queue:
        transaction.on_commit(lambda: report_study.delay(report.pk))
    return report


def report_run(*, report_id: int) -> StudyReport:
    """Make one queued report (the task's body). A report already done is left as it is; one interrupted
    by a dead worker starts again in a fresh folder, so a half-written report is never shown."""
    from .analysis.errors import AnalysisError

    report = StudyReport.objects.select_related("study").get(pk=report_id)
    if report.status == StudyReport.Status.DONE:
        return report
    folder = Path(report.study.slug) / str(report.pk)
    final = Path(settings.REPORTS_ROOT) / folder
    work = final.with_name(f".{final.name}.part")
    shutil.rmtree(work, ignore_errors=True)
    StudyReport.objects.filter(pk=report.pk).update(status=StudyReport.Status.RUNNING, error="",
                                                    progress={"stage": "starting", "fraction": 0.0})

    def progress(stage: str, fraction: float) -> None:
        StudyReport.objects.filter(pk=report.pk).update(progress={"stage": stage, "fraction": round(fraction, 3)},
                                                        updated_at=timezone.now())

    try:
        options = dict(report.options)
        include_pilot = bool(options.pop(INCLUDE_PILOT, False))
        made = build_report(report.study, work, options=options, include_pilot=include_pilot, progress=progress)
    except (AnalysisError, ReportError) as exc:
        _fail(report, work, str(exc))
        return report
    except Exception as exc:  # a bug, not the researcher's input: say so on the dashboard, keep the trace in the log
        logger.exception("report %s of study %s failed", report.pk, report.study.slug)
        _fail(report, work, f"the analysis failed unexpectedly ({type(exc).__name__}: {exc}); the worker's log "
                            "has the details")
        return report
    shutil.rmtree(final, ignore_errors=True)
    work.rename(final)
    StudyReport.objects.filter(pk=report.pk).update(
        status=StudyReport.Status.DONE, folder=folder.as_posix(), snapshot_at=made["snapshot_at"],
        progress={"stage": "done", "fraction": 1.0})
    report.refresh_from_db()
    return report


def _fail(report: StudyReport, work: Path, error: str) -> None:
    shutil.rmtree(work, ignore_errors=True)
    StudyReport.objects.filter(pk=report.pk).update(status=StudyReport.Status.FAILED, error=error)
    report.refresh_from_db()


REPORT_FILES = {"html": "index.html", "pdf": "report.pdf", "json": "summary.json"}


def reports_mentioning(study: Study, text: str) -> list[StudyReport]:
    """The study's finished reports whose files contain `text` (a participant's id): what a request to delete
    that participant's data must also remove."""
    found = []
    for report in study.reports.exclude(folder=""):
        root = Path(settings.REPORTS_ROOT) / report.folder
        for path in root.rglob("*"):
            if path.suffix in (".csv", ".json", ".html") and text in path.read_text(errors="replace"):
                found.append(report)
                break
    return found


def report_delete(report: StudyReport) -> None:
    """Remove a report: its files, then its row."""
    if report.folder:
        shutil.rmtree(Path(settings.REPORTS_ROOT) / report.folder, ignore_errors=True)
    report.delete()


def report_file(report: StudyReport, relative: str) -> Path:
    """The file `relative` of a finished report, refusing anything outside its folder."""
    if report.status != StudyReport.Status.DONE or not report.folder:
        raise ReportError("this report is not finished")
    root = (Path(settings.REPORTS_ROOT) / report.folder).resolve()
    path = (root / relative).resolve()
    if root not in path.parents or not path.is_file():
        raise ReportError("no such file in this report")
    return path
