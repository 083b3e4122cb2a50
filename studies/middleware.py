"""Participant URLs: a participant never sees a stack trace (any unexpected error becomes a friendly page
or a JSON error, whatever DEBUG says; the error is still logged in full), and the pages may be shown
inside the recruiting services' frames (MTurk's ExternalQuestion) and nowhere else."""
import logging

from django.conf import settings

from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import Http404, JsonResponse
from django.shortcuts import render

log = logging.getLogger("studies.participant")
PARTICIPANT_PREFIXES = ("/s/", "/t/", "/lab/", "/v/")


class ParticipantErrorMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.path.startswith(PARTICIPANT_PREFIXES):
            response.xframe_options_exempt = True  # replaced by the narrower CSP frame-ancestors below
            response["Content-Security-Policy"] = "frame-ancestors " + " ".join(settings.PARTICIPANT_FRAME_ANCESTORS)
        return response

    def process_exception(self, request, exception):
        if not request.path.startswith(PARTICIPANT_PREFIXES):
            return None
        if isinstance(exception, Http404):
            return render(request, "studies/participant/message.html", {
                "title": "Not found", "text": "This link is not valid. Please check the link you were given.",
            }, status=404)
        if isinstance(exception, (PermissionDenied, SuspiciousOperation)):
            return None  # Django's own 403/400 handling; no trace is shown for these
        log.exception("participant request failed: %s", request.path)
        if request.content_type == "application/json" or request.path.endswith(("/watch/", "/answer/")):
            return JsonResponse({"ok": False, "error": "server_error",
                                 "message": "Something went wrong on our side; please try again."}, status=500)
        return render(request, "studies/participant/message.html", {
            "title": "Something went wrong",
            "text": "Something went wrong on our side. Your answers so far are saved; please reload the page.",
        }, status=500)
