"""Researcher pages: the study list, a study's dashboard, opening/closing it, preview, CSV export, trained
models and their training progress, health."""
from __future__ import annotations

import functools
import io

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.conf import settings
from django.views.decorators.http import require_POST

from .. import reporting, rendering, selectors, services
from ..exports import write_responses_csv
from ..recruiting import prolific
from ..models import Corpus, Study, StudyReport, TrainedModel
from .participant import _remember


def home(request):
    if request.user.is_authenticated:
        return HttpResponseRedirect(reverse("study_list"))
    return render(request, "studies/researcher/home.html")


def health(request):
    """200 when the database answers, else 503 (what a load balancer or compose healthcheck needs)."""
    from django.db import DatabaseError

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return JsonResponse({"ok": False, "database": "unreachable"}, status=503)
    return JsonResponse({"ok": True})


class RoleTooLow(Exception):
    """The researcher is on the study but their role does not allow this (answered with a 403 page)."""


def _study_and_role(request, slug, action: str = "view") -> tuple[Study, str]:
    """The study and the researcher's role on it, if that role allows `action`. Not on the study at all: 404
    (its existence is not told)."""
    study = get_object_or_404(Study, slug=slug)
    role = selectors.study_role(request.user, study)
    if role is None:
        raise Http404("no such study")
    if not selectors.role_allows(role, action):
        raise RoleTooLow(f"Your role on {study.slug} is {role}; this needs {selectors.ACTION_ROLE[action]} or "
                         f"higher. Ask the study's owner to change your role (manage.py share_study).")
    return study, role


def _study_for(request, slug, action: str = "view") -> Study:
    return _study_and_role(request, slug, action)[0]


def study_page(view):
    """Researcher views: login required, and a too-low role answered with a page that says what is needed."""
    @login_required
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except RoleTooLow as exc:
            return render(request, "studies/researcher/forbidden.html", {"reason": str(exc)}, status=403)
    return wrapper


@login_required
def study_list(request):
    return render(request, "studies/researcher/study_list.html", {"studies": selectors.studies_for_user(request.user)})


@study_page
def study_dashboard(request, slug):
    study, role = _study_and_role(request, slug)
    can = {action: selectors.role_allows(role, action) for action in selectors.ACTION_ROLE}
    base = settings.PUBLIC_BASE_URL
    links = {
        "participant": base + reverse("entry", args=[study.public_token]),
        "prolific": prolific.study_url(study),
        "lab": base + reverse("lab_entry", args=[study.lab_token]),
    }
    if can["manage"]:
        links["pilot"] = (base + reverse("entry", args=[study.public_token])
                          + f"?mode=pilot&key={services.pilot_key(study)}")
    jobs = rendering.study_render_jobs(study.current_version.spec)
    return render(request, "studies/researcher/dashboard.html",
                  {**selectors.dashboard(study, include_pilot=request.GET.get("sessions") == "all"), "links": links, "renders": rendering.render_progress(jobs),
                   "reports": study.reports.all()[:5], "corrections": REPORT_CORRECTIONS,
                   "role": role, "can": can, "members": study.members.select_related("user")})


REPORT_CORRECTIONS = (("holm", "Holm–Bonferroni"), ("bonferroni", "Bonferroni"), ("bh", "Benjamini–Hochberg"),
                      ("none", "none"))


@study_page
@require_POST
def study_report_request(request, slug):
    """Queue a significance report of the responses so far (made by a worker; progress on the dashboard)."""
    study = _study_for(request, slug, "analyse")
    options = {"correction": request.POST.get("correction") or "holm"}
    try:
        options["n_boot"] = int(request.POST.get("n_boot") or 10000)
        options["seed"] = int(request.POST.get("seed") or 0)
    except ValueError:
        return HttpResponse("Bootstrap rounds and seed must be whole numbers.", status=400, content_type="text/plain")
    if options["correction"] not in dict(REPORT_CORRECTIONS) or not 100 <= options["n_boot"] <= 100_000:
        return HttpResponse("Choose a listed correction and 100 to 100,000 bootstrap rounds.", status=400,
                            content_type="text/plain")
    reporting.report_request(study=study, user=request.user, options=options,
                             include_pilot=request.POST.get("include_pilot") == "1")
    return HttpResponseRedirect(reverse("study_dashboard", args=[slug]) + "#reports")


@study_page
def study_report_progress(request, slug, report_id):
    report = get_object_or_404(StudyReport, pk=report_id, study=_study_for(request, slug))
    return JsonResponse({"id": report.pk, "status": report.status, "progress": report.progress,
                         "error": report.error})


REPORT_TYPES = {".html": "text/html; charset=utf-8", ".pdf": "application/pdf", ".json": "application/json",
                ".csv": "text/csv; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}


@study_page
def study_report_file(request, slug, report_id, name):
    """A file of a finished report (the page, the PDF, tables, figures), to the study's researchers only."""
    report = get_object_or_404(StudyReport, pk=report_id, study=_study_for(request, slug))
    try:
        path = reporting.report_file(report, name)
    except reporting.ReportError as exc:
        raise Http404(str(exc))
    response = FileResponse(path.open("rb"), content_type=REPORT_TYPES.get(path.suffix, "application/octet-stream"))
    if path.suffix == ".svg":  # an SVG can hold script: never run it as a page of this site
        response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    elif path.suffix == ".html":  # the report page: its own inline styles and figures, nothing else
        response["Content-Security-Policy"] = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
                                               "frame-ancestors 'none'")
    return response


@study_page
@require_POST
def study_render_retry(request, slug):
    """Queue the study's failed renders again (on the render workers)."""
    from ..tasks import render_stimulus

    study = _study_for(request, slug, "manage")
    jobs = rendering.render_jobs_plan(study.current_version.spec, retry_failed=True)
    for job in jobs:
        if job.status == job.Status.QUEUED:
            render_stimulus.delay(job.pk)
    return HttpResponseRedirect(reverse("study_dashboard", args=[slug]))


@study_page
def study_gallery(request, slug):
    """All conditions and embodiments of one utterance side by side, playing in sync (researchers only)."""
    study = _study_for(request, slug)
    corpus = get_object_or_404(Corpus, name=study.current_version.spec["stimuli"]["corpus"])
    rated = services.study_utterance_names(study.current_version.spec)
    return render(request, "studies/researcher/gallery.html",
                  {"study": study, **rendering.stimuli_gallery(study.current_version.spec, corpus,
                                                               request.GET.get("utterance"), rated)})


@study_page
@require_POST
def study_status(request, slug):
    study = _study_for(request, slug, "manage")
    services.study_set_status(study=study, status=request.POST.get("status", ""))
    return HttpResponseRedirect(reverse("study_dashboard", args=[slug]))


@study_page
@require_POST
def study_preview(request, slug):
    study = _study_for(request, slug)
    participant, _ = services.participant_start(study=study, source="preview")
    _remember(request, study, participant)
    return HttpResponseRedirect(reverse("take", args=[study.public_token]))


@study_page
def study_export(request, slug):
    study = _study_for(request, slug, "analyse")
    buffer = io.StringIO()
    write_responses_csv(study, buffer, include_pilot=request.GET.get("pilot") == "1")
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{study.slug}-responses.csv"'
    return response


@login_required
def model_list(request):
    models = TrainedModel.objects.select_related("corpus").order_by("-created_at")
    return render(request, "studies/researcher/models.html", {"models": models})


@login_required
def model_progress(request, name):
    model = get_object_or_404(TrainedModel, name=name)
    return JsonResponse({"name": model.name, "status": model.status, "progress": model.progress,
                         "error": model.error})
