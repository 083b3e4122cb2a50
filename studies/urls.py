"""URLs. Participant URLs carry only opaque tokens (study public token, trial and stimulus tokens)."""
from django.urls import path

from .views import media, participant, researcher

urlpatterns = [
    # participants
    path("s/<str:study_token>/", participant.entry, name="entry"),
    path("lab/<str:lab_token>/", participant.lab_entry, name="lab_entry"),
    path("t/<str:study_token>/", participant.take, name="take"),
    path("t/<str:study_token>/page/<int:page_index>/", participant.page_post, name="page_post"),
    path("t/<str:study_token>/watch/", participant.watch, name="watch"),
    path("t/<str:study_token>/answer/", participant.answer, name="answer"),
    path("v/<str:token>.mp4", media.stimulus_video, name="stimulus_video"),
    # researchers
    path("", researcher.home, name="home"),
    path("healthz", researcher.health, name="health"),
    path("models/", researcher.model_list, name="model_list"),
    path("models/<slug:name>/progress.json", researcher.model_progress, name="model_progress"),
    path("r/", researcher.study_list, name="study_list"),
    path("r/<slug:slug>/", researcher.study_dashboard, name="study_dashboard"),
    path("r/<slug:slug>/status/", researcher.study_status, name="study_status"),
    path("r/<slug:slug>/preview/", researcher.study_preview, name="study_preview"),
    path("r/<slug:slug>/renders/retry/", researcher.study_render_retry, name="study_render_retry"),
    path("r/<slug:slug>/gallery/", researcher.study_gallery, name="study_gallery"),
    path("r/<slug:slug>/responses.csv", researcher.study_export, name="study_export"),
    path("r/<slug:slug>/reports/", researcher.study_report_request, name="study_report_request"),
    path("r/<slug:slug>/reports/<int:report_id>/progress.json", researcher.study_report_progress,
         name="study_report_progress"),
    path("r/<slug:slug>/reports/<int:report_id>/<path:name>", researcher.study_report_file, name="study_report_file"),
]
