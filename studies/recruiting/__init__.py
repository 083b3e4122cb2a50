"""Recruiting services: where participants come from and how they are paid.

`mturk` is a thin, typed layer over boto3's MTurk client (publish HITs, review and pay assignments, keep
past participants out); `prolific` builds the links and codes a researcher pastes into Prolific, which
needs no API calls. Both point participants at the same entry URL, built here, and both keep what the
services know of a study (HIT ids, qualification type ids, bonuses) in `Study.recruiting`.
"""
from __future__ import annotations

from django.conf import settings
from django.urls import reverse

from ..models import Study


class RecruitingError(Exception):
    """A refusal the researcher can act on; the message is one line that says what to do."""


def participant_entry_url(study: Study) -> str:
    """The absolute URL a recruiting service sends participants to (`PUBLIC_BASE_URL/s/<token>/`)."""
    return settings.PUBLIC_BASE_URL + reverse("entry", args=[study.public_token])


def require_public_https(url: str) -> None:
    """Refuse a participant URL that people elsewhere cannot open (MTurk accepts only HTTPS)."""
    if not url.startswith("https://"):
        raise RecruitingError(
            f"the participant URL {url} is not HTTPS; set PUBLIC_BASE_URL to the site's public https:// address"
        )
