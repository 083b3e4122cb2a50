"""Stimulus video serving: only to a participant whose session includes the token; HTTP Range supported
(browsers, Safari especially, need it to play and seek). In production the file is handed to nginx with
X-Accel-Redirect after the same check. Headers carry nothing but the opaque token."""
from __future__ import annotations

import os
import re
from pathlib import Path

from django.conf import settings
from django.http import FileResponse, Http404, HttpResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET

from .. import selectors
from ..models import Stimulus
from .participant import SESSION_KEY, is_token

RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
CHUNK = 64 * 1024


def _entitled_file(request, token: str) -> str | None:
    """The video file behind the token, if this browser may see it; None otherwise (and for any non-token)."""
    if not is_token(token):
        return None
    file = selectors.stimulus_file_for_sessions(list(request.session.get(SESSION_KEY, {}).values()), token)
    if file is None and request.user.is_authenticated and request.user.is_staff:
        # researchers previewing in the admin
        file = Stimulus.objects.filter(token=token).values_list("file", flat=True).first()
    return file


def _file_chunks(path: Path, start: int, length: int):
    with open(path, "rb") as fh:
        fh.seek(start)
        remaining = length
        while remaining > 0:
            data = fh.read(min(CHUNK, remaining))
            if not data:
                break
            remaining -= len(data)
            yield data


@require_GET
def stimulus_video(request, token: str):
    file = _entitled_file(request, token)
    if file is None:
        raise Http404("not found")  # the same answer for unknown and not-yours: tokens cannot be probed
    path = Path(settings.MEDIA_ROOT) / file
    if not path.is_file():
        raise Http404("not found")
    if settings.MEDIA_ACCEL_REDIRECT_PREFIX:
        response = HttpResponse(content_type="video/mp4")
        response["X-Accel-Redirect"] = settings.MEDIA_ACCEL_REDIRECT_PREFIX.rstrip("/") + "/" + file
        return _private(response)
    size = os.path.getsize(path)
    header = request.META.get("HTTP_RANGE", "").strip()
    match = RANGE_RE.match(header) if header else None
    if header and not match:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        return _private(response)
    if match:
        first, last = match.groups()
        if first == "":  # suffix range: the last N bytes
            length = min(int(last or 0), size)
            start, end = size - length, size - 1
        else:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
        if start >= size or start > end:
            response = HttpResponse(status=416)
            response["Content-Range"] = f"bytes */{size}"
            return _private(response)
        response = StreamingHttpResponse(_file_chunks(path, start, end - start + 1), status=206, content_type="video/mp4")
        response["Content-Length"] = str(end - start + 1)
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    else:
        response = FileResponse(open(path, "rb"), content_type="video/mp4")
        response["Content-Length"] = str(size)
    response["Accept-Ranges"] = "bytes"
    return _private(response)


def _private(response):
    response["Cache-Control"] = "private, max-age=3600"
    response["Content-Disposition"] = "inline"
    return response
