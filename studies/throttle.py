"""Rate limits on the participant endpoints: a fixed-window counter per client and bucket in Django's cache
(Redis in production, shared by every web worker; per process otherwise).

Buckets: `start` (a new session: /s/, /lab/; per client address), `page` (pages and page posts; per
participant session, else per address), `api` (watch reports and answers; per participant session),
`video` (stimulus requests, several range requests per play; per session, else per address). Limits come
from settings.PARTICIPANT_RATE_LIMITS ("start=60/m,api=300/m,…"; a bucket left out is not limited).

Over the limit: 429 with Retry-After (JSON for the API, a plain page otherwise); the trial page's script
waits and retries, so no answer is lost to a limit. Ratings must never depend on the cache: if the cache
cannot be reached, requests pass (fail open) and the failure is logged once a minute.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import time
import weakref

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.core.exceptions import ImproperlyConfigured
from django.http import JsonResponse
from django.shortcuts import render

log = logging.getLogger("studies.throttle")


def parse_limits(text: str) -> dict[str, tuple[int, int]]:
    """"start=60/m,api=300/m" → {"start": (60, 60), "api": (300, 60)}; units s, m, h. ValueError names the bad part."""
    periods = {"s": 1, "m": 60, "h": 3600}
    limits = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, rate = part.partition("=")
        count, _, unit = rate.partition("/")
        if name.strip() not in BUCKETS or not count.strip().isdigit() or unit.strip() not in periods:
            raise ValueError(f"bad rate limit {part!r}: write BUCKET=COUNT/UNIT with BUCKET one of "
                             f"{', '.join(BUCKETS)} and UNIT one of s, m, h (e.g. api=300/m)")
        limits[name.strip()] = (int(count), periods[unit.strip()])
    return limits


BUCKETS = ("start", "page", "api", "video")


def bucket_of(path: str) -> str | None:
    if path.startswith(("/s/", "/lab/")):
        return "start"
    if path.startswith("/v/"):
        return "video"
    if path.startswith("/t/"):
        return "api" if path.endswith(("/watch/", "/answer/")) else "page"
    return None


def client_address(request) -> str:
    """The client's address: from the proxy's header when one is configured (nginx's X-Real-IP)."""
    header = settings.RATE_LIMIT_CLIENT_IP_HEADER
    if header and request.META.get(header):
        return request.META[header].split(",")[0].strip()
    return request.META.get("REMOTE_ADDR", "")


def client_key(request, bucket: str) -> str:
    if bucket != "start":
        study_token = request.path.split("/")[2] if request.path.startswith("/t/") else None
        sessions = request.session.get("participant_sessions") or {}
        participant = sessions.get(study_token) if study_token else None
        if participant is None and bucket == "video" and sessions:
            participant = ",".join(sorted(map(str, sessions.values())))
        if participant:
            return "p:" + hashlib.sha256(str(participant).encode()).hexdigest()[:24]
    return "a:" + hashlib.sha256(client_address(request).encode()).hexdigest()[:24]


@functools.lru_cache(maxsize=8)
def configured_limits(text: str) -> dict[str, tuple[int, int]]:
    try:
        return parse_limits(text)
    except ValueError as exc:
        raise ImproperlyConfigured(f"PARTICIPANT_RATE_LIMITS: {exc}") from None


# One round trip, one command: raise the window's counter and, when this made it, set its expiry (atomic in
# Redis, so no counter is left without one).
_COUNT_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""
_redis_scripts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Django's cache client → its script


def _count(cache, key: str, timeout: int) -> int:
    """Add one to the window's counter and return it: on Redis one script call (every participant request
    passes here, so its cost counts); other caches add, then incr."""
    if isinstance(cache, RedisCache):
        # Django makes a new redis.Redis over its connection pool on every call, which costs more Python
        # than the round trip: one client and script per cache client, then.
        script = _redis_scripts.get(cache._cache)
        if script is None:
            script = _redis_scripts[cache._cache] = cache._cache.get_client(write=True).register_script(_COUNT_SCRIPT)
        return int(script(keys=[cache.make_and_validate_key(key)], args=[timeout]))
    cache.add(key, 0, timeout=timeout)
    return cache.incr(key)


class ParticipantRateLimitMiddleware:
    _last_cache_failure_log = 0.0

    def __init__(self, get_response):
        self.get_response = get_response
        configured_limits(settings.PARTICIPANT_RATE_LIMITS)  # a bad setting stops the start, not a request

    def __call__(self, request):
        bucket = bucket_of(request.path)
        limit = configured_limits(settings.PARTICIPANT_RATE_LIMITS).get(bucket) if bucket else None
        if limit:
            retry_after = self._over(bucket, client_key(request, bucket), *limit)
            if retry_after:
                return self._refuse(request, bucket, retry_after)
        return self.get_response(request)

    def _over(self, bucket: str, key: str, count: int, period: int) -> int:
        """Seconds to wait if this request is over the limit, else 0 (also when the cache fails)."""
        now = time.time()
        window = int(now // period)
        cache_key = f"ratelimit:{bucket}:{key}:{window}"
        cache = caches[settings.RATE_LIMIT_CACHE]
        try:
            n = _count(cache, cache_key, period + 5)
        except Exception as exc:  # noqa: BLE001 — any cache failure: let the participant through
            if now - ParticipantRateLimitMiddleware._last_cache_failure_log > 60:
                ParticipantRateLimitMiddleware._last_cache_failure_log = now
                log.warning("rate limits not applied: the cache failed (%s: %s)", type(exc).__name__, exc)
            return 0
        if n <= count:
            return 0
        return max(1, int((window + 1) * period - now + 0.999))

    @staticmethod
    def _refuse(request, bucket: str, retry_after: int):
        log.info("rate limit %s reached: %s (retry in %d s)", bucket, request.path, retry_after)
        if bucket == "api":
            response = JsonResponse({"ok": False, "error": "rate_limited", "retry_after": retry_after,
                                     "message": "Too many requests; please wait a moment."}, status=429)
        elif bucket == "video":
            response = JsonResponse({"ok": False, "error": "rate_limited", "retry_after": retry_after}, status=429)
        else:
            response = render(request, "studies/participant/message.html", {
                "title": "Please wait a moment",
                "text": f"There were too many requests from your connection. Please wait {retry_after} seconds "
                        "and reload the page; your answers so far are saved.",
            }, status=429)
        response["Retry-After"] = str(retry_after)
        return response
