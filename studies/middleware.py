"""Participant URLs: a participant never sees a stack trace (any unexpected error becomes a friendly page
or a JSON error, whatever DEBUG says; the error is still logged in full), and the pages may be shown
inside the recruiting services' frames (MTurk's ExternalQuestion) and nowhere else.

Every page of the site gets a Content-Security-Policy: scripts, styles, media and requests from this site
only (no inline script anywhere), forms posted here or to MTurk, no framing except participant pages in
the recruiting services' frames. The Django admin also gets inline styles (its widgets use them). A view
that set its own policy (a report file) keeps it.

The health check (/healthz) is answered before anything else: a container's probe asks by 127.0.0.1,
which is no allowed host, and over plain HTTP, which the HTTPS redirect would turn away."""
import logging

from django.conf import settings

from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import Http404, JsonResponse
from django.shortcuts import render

log = logging.getLogger("studies.participant")
PARTICIPANT_PREFIXES = ("/s/", "/t/", "/lab/", "/v/")


class HealthCheckMiddleware:
    """GET/HEAD /healthz, first in the chain: before the host check and the HTTPS redirect."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info == "/healthz" and request.method in ("GET", "HEAD"):
            from .views.researcher import health

            return health(request)
        return self.get_response(request)


CSP = {
    "default-src": "'self'", "script-src": "'self'", "style-src": "'self'", "img-src": "'self' data:",
    "media-src": "'self'", "connect-src": "'self'", "font-src": "'self'", "object-src": "'none'",
    "base-uri": "'none'", "form-action": "'self' https://www.mturk.com https://workersandbox.mturk.com",
    "frame-ancestors": "'none'",
}


def content_security_policy(path: str) -> str:
    policy = dict(CSP)
    if path.startswith(PARTICIPANT_PREFIXES):
        policy["frame-ancestors"] = " ".join(settings.PARTICIPANT_FRAME_ANCESTORS)
    elif path.startswith("/admin/"):
        policy["style-src"] = "'self' 'unsafe-inline'"
    return "; ".join(f"{k} {v}" for k, v in policy.items())


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = content_security_policy(request.path)
        return response


class ParticipantErrorMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.path.startswith(PARTICIPANT_PREFIXES):
            response.xframe_options_exempt = True  # replaced by the narrower CSP frame-ancestors
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
