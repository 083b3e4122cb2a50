"""Simulated participants (oTree-style bots) that take a study over real HTTP, page by page, as a browser.

A bot opens the study link, reads each page's HTML (`<main data-page=...>` says which page it is), submits
the forms, fetches every video (a MUSHRA screen's open reference too: one more video to watch, with no
slider to set), waits as long as a person would watch it, reports the playback, and sends its answers as
JSON with a client-made submission id, retrying the same id on a network error or a 5xx (the platform's
guarantee against lost and duplicated answers). Bots never fake the clock: a bot that
"watches" a clip waits for its real duration; benchmarks use short clips instead.

Three behaviours exercise the quality-control rules (services.quality_evaluate):
- attentive: watches every video to the end, thinks 1.5-6 s, gives varied plausible ratings, and gives
  an attention-check clip the answer it asks for;
- careless: watches, but straight-lines (one likert value nearly always) and ignores attention checks;
- speeder: waits only the minimum the server accepts and answers within 100-300 ms.
A bot "hears" what a clip says only for the check clips whose expected answers it is given (`known
answers`, keyed by the opaque stimulus token, like a person hearing the clip); it never knows conditions.

The same bots are the load generator (bench/rating_throughput.py): every request's latency and outcome is
recorded (with the start of any 5xx answer's body, so a caller can check what a participant was shown),
and every acknowledged answer submission is listed so a caller can check for loss and duplicates in the
database (`submissions_verify`).

Nothing here touches the ORM except `study_target` and `submissions_verify`, which callers run outside
the event loop.
"""
from __future__ import annotations

import asyncio
import json
import math
import random
import re
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urlencode, urljoin

import aiohttp

MAX_ATTEMPTS = 6  # per request, on a network error or a 5xx (the first try included)
BACKOFF_S = 0.25  # doubled after every failed attempt, capped at BACKOFF_CAP_S
BACKOFF_CAP_S = 4.0
TOO_EARLY_RETRIES = 20
MAX_PAGES = 500
VIDEO_RE = re.compile(r"/v/([^/?#]+)\.mp4")


# ------------------------------------------------------------------------------------------ behaviour
@dataclass(frozen=True)
class Behaviour:
    """How one kind of participant acts; every pause is real time."""

    name: str
    think_ms: tuple[int, int]  # pause between the answers unlocking and the answer POST (uniform-ish)
    watch: str  # "full": each video to its end, one after another; "minimum": the least the server accepts
    ratings: str  # "varied" | "straight" | "random"
    heeds_checks: bool  # gives an attention-check clip the answer it asks for
    fills_demographics: bool = True
    # At least this long from a trial's page to its answer (0: no pacing): a crowd at a steady pace offers a
    # known load (bench/rating_throughput.py --pace-s).
    pace_s: float = 0.0


ATTENTIVE = Behaviour("attentive", (1500, 6000), watch="full", ratings="varied", heeds_checks=True)
CARELESS = Behaviour("careless", (1100, 2500), watch="full", ratings="straight", heeds_checks=False,
                     fills_demographics=False)
SPEEDER = Behaviour("speeder", (100, 300), watch="minimum", ratings="random", heeds_checks=False,
                    fills_demographics=False)
BEHAVIOURS = {b.name: b for b in (ATTENTIVE, CARELESS, SPEEDER)}


@dataclass(frozen=True)
class StudyTarget:
    """Where the bots go and what they can hear: the check clips' expected answers by stimulus token."""

    base_url: str
    study_token: str
    key: str  # services.pilot_key(study): lets the entry URL declare the session a bot
    known_answers: dict = field(default_factory=dict)
    perceived: dict = field(default_factory=dict)  # stimulus token -> how natural it looks to a bot, 0..1
    # Bots say they are bots (the entry link's mode=bot), so their sessions are never data. A load test
    # clears this to come in by the study's plain link and take the path real participants take.
    declared: bool = True


# What a simulated viewer sees in a clip, by the kind of condition behind it: recorded motion looks most
# natural, a model's less, someone else's motion (random alignment) less still, a still face least. Bots
# rate by this with their own bias and noise, so a demo's report has differences to find; the page and
# the video never tell them (the harness does, from the database, as a person's eyes would).
PERCEIVED_BY_KIND = {"ground_truth": 0.96, "uploaded": 0.7, "model": 0.62, "time_shift": 0.5,
                     "random_alignment": 0.42, "still": 0.15}
PERCEIVED_CATCH = 0.1  # a lip-sync catch trial (motion ≥ 400 ms off the speech) is plain to see
# A model scored by `evaluate_models` looks as natural as its motion follows the recording: between random
# alignment (another utterance's motion) and the recording itself by its mean held-out CCC over the face
# regions in landmark space, the space every motion model is scored in.
SCORED_REGION_PREFIX = "landmarks:"


def model_perception(spec: dict) -> dict[str, float]:
    """How natural each of the study's model conditions looks to a bot, by condition name, for the models that
    have held-out scores (reporting.objective_metrics); the others look like PERCEIVED_BY_KIND["model"]."""
    from .reporting import objective_metrics

    scores: dict[str, list[float]] = {}
    for row in objective_metrics(spec):
        region, ccc = row["metrics"].get("region"), row["metrics"].get("ccc")
        if row["condition"] and isinstance(region, str) and region.startswith(SCORED_REGION_PREFIX) \
                and isinstance(ccc, float) and math.isfinite(ccc):
            scores.setdefault(row["condition"], []).append(ccc)
    low, high = PERCEIVED_BY_KIND["random_alignment"], PERCEIVED_BY_KIND["ground_truth"]
    return {name: low + (high - low) * min(1.0, max(0.0, sum(cccs) / len(cccs))) for name, cccs in scores.items()}


def study_target(study, base_url: str) -> StudyTarget:
    """The target for a study (ORM reads; call outside the event loop).

    Known answers are the attention-check and A/V-check clips' expected answers: what a person hears in
    the clip, never which condition a video shows.
    """
    from . import selectors, services
    from .models import Corpus, Stimulus

    spec = study.current_version.spec
    corpus = spec["stimuli"]["corpus"]
    checks = [*selectors.attention_check_stimuli(spec, Corpus.objects.get(name=corpus)),
              selectors.av_check_stimulus(spec)]
    known = {s.token: s.expected_answer for s in checks if s is not None and s.expected_answer is not None}
    # The study's own videos only (its render settings' variant), as its participants are served them.
    shown = Stimulus.objects.filter(selectors.in_study_variant(spec), utterance__corpus__name=corpus,
                                    condition__name__in=list(spec["stimuli"]["conditions"]))
    by_model = model_perception(spec)
    perceived = {token: PERCEIVED_CATCH if (params or {}).get("catch") else by_model.get(name, PERCEIVED_BY_KIND[kind])
                 for token, name, kind, params in shown.values_list("token", "condition__name", "condition__kind",
                                                                    "condition__params")
                 if kind in PERCEIVED_BY_KIND}
    return StudyTarget(base_url.rstrip("/"), study.public_token, services.pilot_key(study), known, perceived)


# -------------------------------------------------------------------------------------------- records
@dataclass
class Call:
    """One HTTP request: which endpoint, its status (None on a network error) and its latency."""

    endpoint: str
    status: int | None
    seconds: float
    error: str = ""
    at: float = 0.0  # time.perf_counter() when the response was complete
    body: str = ""  # the start of a 5xx answer's body: what a participant would have been shown


@dataclass
class Submission:
    """An answer submission the server acknowledged (201 saved, or 200 for an idempotent retry)."""

    bot_id: str
    trial: str
    submission_id: str
    answers: int
    status: int
    resent: bool = False  # sent again on purpose as if the first response had been lost
    at: float = 0.0


@dataclass
class BotResult:
    bot_id: str
    behaviour: str
    outcome: str = "error"  # completed | screened_out | unavailable | abandoned | error
    reason: str = ""
    completion_code: str = ""
    pages: int = 0
    calls: list[Call] = field(default_factory=list)
    submissions: list[Submission] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what a person would notice but could get past
    seconds: float = 0.0


class BotError(Exception):
    """The bot cannot go on; the message says where and why."""


# -------------------------------------------------------------------------------------------- parsing
@dataclass
class Video:
    src: str
    token: str
    slot: int
    duration: float


@dataclass
class Page:
    kind: str | None = None  # None on a message page (screened out, unavailable, expired, error)
    title: str = ""
    text: str = ""  # the first plain paragraph: on a message page, what it says
    error: str = ""
    form_action: str = ""
    form_fields: list[str] = field(default_factory=list)
    csrf: str = ""
    trial: dict = field(default_factory=dict)
    videos: list[Video] = field(default_factory=list)
    choices: dict = field(default_factory=dict)  # item -> radio values, in page order (likert, pairwise)
    sliders: list[tuple[str, int]] = field(default_factory=list)  # (item, slot)
    completion_code: str = ""


class _PageParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._text_into: str | None = None
        self._in_form = False
        self._fieldset_item: str | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        cls = a.get("class", "").split()
        p = self.page
        if tag == "main" and "data-page" in a:
            p.kind = a["data-page"]
        elif tag == "h1" and not p.title:
            self._text_into = "title"
        elif tag == "p" and "error" in cls and a.get("role") == "alert" and "hidden" not in a:
            self._text_into = "error"
        elif tag == "p" and not cls and not p.text:
            self._text_into = "text"
        elif tag == "strong" and a.get("id") == "completion-code":
            self._text_into = "completion_code"
        elif tag == "form" and a.get("method", "").lower() == "post" and not p.form_action:
            p.form_action = a.get("action", "")
            self._in_form = True
        elif tag == "div" and a.get("id") == "trial":
            p.trial = a
        elif tag == "video" and "stimulus" in cls:
            match = VIDEO_RE.search(a.get("src", ""))
            duration = a.get("data-duration", "").replace(",", ".")
            p.videos.append(Video(
                src=a.get("src", ""), token=match.group(1) if match else "",
                slot=int(a.get("data-slot") or 0), duration=float(duration) if duration else 0.0,
            ))
        elif tag == "fieldset" and "data-item" in a:
            self._fieldset_item = a["data-item"]
            p.choices.setdefault(self._fieldset_item, [])
        elif tag == "input":
            name = a.get("name", "")
            if name == "csrfmiddlewaretoken":
                p.csrf = p.csrf or a.get("value", "")
            elif a.get("type") == "radio" and self._fieldset_item is not None:
                p.choices[self._fieldset_item].append(a.get("value", ""))
            elif "slider" in cls:
                p.sliders.append((a.get("data-item", ""), int(a.get("data-slot") or 0)))
            elif self._in_form and name:
                p.form_fields.append(name)
        elif tag == "select" and self._in_form and a.get("name"):
            p.form_fields.append(a["name"])

    def handle_endtag(self, tag):
        if tag in ("h1", "p", "strong"):
            self._text_into = None
        elif tag == "form":
            self._in_form = False
        elif tag == "fieldset":
            self._fieldset_item = None

    def handle_data(self, data):
        if self._text_into:
            setattr(self.page, self._text_into, (getattr(self.page, self._text_into) + data).strip())


def parse_page(html: str) -> Page:
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    return parser.page


# ------------------------------------------------------------------------------------------------ bot
def _json_or_empty(raw: bytes) -> dict:
    try:
        return json.loads(raw or b"{}")
    except ValueError:
        return {}


def _min_accepted_watch_s(duration: float) -> float:
    """The earliest moment after the page was served that the server accepts 'ended' (its own rule)."""
    from .services import MIN_PLAY_SHARE, PLAY_ALLOWANCE_S

    return max(0.0, duration * MIN_PLAY_SHARE - PLAY_ALLOWANCE_S)


class Bot:
    """One participant: its own cookie jar (session), behaviour and random seed."""

    def __init__(self, target: StudyTarget, *, bot_id: str, behaviour: Behaviour, seed: int | None = None,
                 lose_responses: float = 0.0, timeout_s: float = 60.0, start_after_s: float = 0.0):
        self.target = target
        self.bot_id = bot_id
        self.behaviour = behaviour
        self.rng = random.Random(seed if seed is not None else bot_id)
        # Chance that the bot acts as if an acknowledged answer's response were lost, and sends it again.
        self.lose_responses = lose_responses
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.start_after_s = start_after_s  # arrival time: participants do not all open the link at once
        self.result = BotResult(bot_id=bot_id, behaviour=behaviour.name)
        # Per-bot taste for 'varied' ratings (share of the scale) and the value a straight-liner sticks to.
        self._taste = self.rng.uniform(0.3, 0.75)
        self._straight_share = self.rng.uniform(0.5, 1.0)
        self._recent: list[int] = []

    # -- running ---------------------------------------------------------------------------------------
    async def run(self) -> BotResult:
        if self.start_after_s > 0:
            await asyncio.sleep(self.start_after_s)
        started = time.perf_counter()
        jar = aiohttp.CookieJar(unsafe=True)  # unsafe: accept cookies from an IP address (127.0.0.1)
        headers = {"User-Agent": f"evalsite-bot/1 ({self.behaviour.name})"}
        try:
            async with aiohttp.ClientSession(cookie_jar=jar, timeout=self.timeout, headers=headers) as http:
                self._http = http
                await self._take_study()
        except BotError as exc:
            self.result.outcome, self.result.reason = "error", str(exc)
        except Exception as exc:  # a bot never takes the whole run down; its failure is reported
            self.result.outcome, self.result.reason = "error", f"{type(exc).__name__}: {exc}"
        self.result.seconds = time.perf_counter() - started
        return self.result

    async def _call(self, endpoint: str, method: str, url: str, *, read: str = "text", **kwargs):
        """One request with retries on network errors, 5xx and 429; returns (status, headers, body).

        read: "text", "json" (a dict, {} when not JSON) or "discard" (the body is read and counted).
        The same request, byte for byte, is resent: for answers that means the same submission id.
        """
        for attempt in range(MAX_ATTEMPTS):
            t0 = time.perf_counter()
            try:
                async with self._http.request(method, url, allow_redirects=False, **kwargs) as resp:
                    shown = ""
                    if resp.status >= 500:  # kept as the participant would have seen it, whatever `read` says
                        raw = await resp.read()
                        shown = raw[:4000].decode("utf-8", "replace")
                        body = len(raw) if read == "discard" else _json_or_empty(raw) if read == "json" else shown
                    elif read == "discard":
                        body = 0
                        async for chunk in resp.content.iter_chunked(64 * 1024):
                            body += len(chunk)
                    elif read == "json":
                        body = _json_or_empty(await resp.read())
                    else:
                        body = await resp.text()
                    status, resp_headers = resp.status, resp.headers
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                now = time.perf_counter()
                self.result.calls.append(Call(endpoint, None, now - t0, type(exc).__name__, now))
                if attempt + 1 == MAX_ATTEMPTS:
                    raise BotError(f"{endpoint}: {type(exc).__name__} {exc} after {MAX_ATTEMPTS} attempts") from None
                await asyncio.sleep(min(BACKOFF_S * 2**attempt, BACKOFF_CAP_S))
                continue
            now = time.perf_counter()
            self.result.calls.append(Call(endpoint, status, now - t0, "", now, shown))
            if status >= 500 and attempt + 1 < MAX_ATTEMPTS:
                await asyncio.sleep(min(BACKOFF_S * 2**attempt, BACKOFF_CAP_S))
                continue
            if status == 429 and attempt + 1 < MAX_ATTEMPTS:  # over a rate limit: wait as told, as a browser does
                await asyncio.sleep(min(float(resp_headers.get("Retry-After") or 1), 60.0))
                continue
            return status, resp_headers, body
        raise AssertionError("unreachable")

    def _csrf(self, page: Page) -> str:
        if page.csrf:
            return page.csrf
        return next((c.value for c in self._http.cookie_jar if c.key == "csrftoken"), "")

    async def _take_study(self) -> None:
        t = self.target
        entry = f"{t.base_url}/s/{t.study_token}/"
        if t.declared:
            entry += "?" + urlencode({"mode": "bot", "key": t.key, "bot_id": self.bot_id})
        status, headers, body = await self._call("entry", "GET", entry)
        if status != 302:
            self.result.outcome = "unavailable"
            message = parse_page(body)
            self.result.reason = message.text or message.title or f"entry answered {status}"
            return
        take_url = urljoin(entry, headers["Location"])
        last, repeats = None, 0
        for _ in range(MAX_PAGES):
            status, _, html = await self._call("page", "GET", take_url)
            shown_at = time.monotonic()  # the server stamped the trial as shown before it answered
            page = parse_page(html)
            self.result.pages += 1
            if page.kind is None:
                title = page.title.lower()
                if status == 200 and title.startswith("thank you"):
                    self.result.outcome, self.result.reason = "screened_out", page.text or page.title
                elif title.startswith("session expired"):
                    self.result.outcome, self.result.reason = "abandoned", page.title
                else:
                    raise BotError(f"unexpected page ({status}): {page.title or html[:120]!r}")
                return
            where = (page.kind, page.form_action, page.trial.get("data-trial"))
            repeats = repeats + 1 if where == last else 0
            last = where
            if repeats >= 3:
                raise BotError(f"stuck on the {page.kind} page: {page.error or 'no message shown'}")
            if page.kind == "completion":
                self.result.outcome, self.result.completion_code = "completed", page.completion_code
                return
            if page.kind in ("training", "trials"):
                await self._trial(page, take_url, shown_at)
            else:
                await self._form(page, take_url)
        raise BotError(f"gave up after {MAX_PAGES} pages")

    # -- pages -----------------------------------------------------------------------------------------
    async def _form(self, page: Page, take_url: str) -> None:
        if not page.form_action:
            raise BotError(f"the {page.kind} page has no form")
        data = {"csrfmiddlewaretoken": self._csrf(page)}
        if page.kind == "consent":
            data["agree"] = "yes"
        elif page.kind == "av_check":
            for video in page.videos:
                await self._fetch_video(video, take_url, page_kind=page.kind, required=False)
            heard = [self.target.known_answers.get(v.token, {}).get("digits") for v in page.videos]
            data["digits"] = next((d for d in heard if d), "")
        elif page.kind == "demographics" and self.behaviour.fills_demographics:
            made_up = {"age": str(self.rng.randint(18, 70)),
                       "gender": self.rng.choice(["Woman", "Man", "Non-binary", ""]),
                       "native_language": self.rng.choice(["English", "German", "Swedish", "Spanish"])}
            data.update({name: made_up[name] for name in page.form_fields if name in made_up})
        status, _, _ = await self._call("form", "POST", urljoin(take_url, page.form_action), data=data,
                                        headers={"Referer": take_url})
        if status != 302:
            raise BotError(f"the {page.kind} form was answered with {status}")

    async def _fetch_video(self, video: Video, take_url: str, *, page_kind: str, required: bool = True) -> None:
        # As a browser's first request for a <video>: an open-ended range; the small file is read and dropped.
        status, _, _ = await self._call("video", "GET", urljoin(take_url, video.src), read="discard",
                                        headers={"Range": "bytes=0-"})
        if status not in (200, 206):
            if required:
                raise BotError(f"a video on the {page_kind} page answered {status}")
            # The bot knows the clip's content anyway; a person would be stuck, so it is reported.
            self.result.problems.append(f"a video on the {page_kind} page answered {status}")

    async def _trial(self, page: Page, take_url: str, shown_at: float) -> None:
        trial_id = page.trial.get("data-trial", "")
        answer_url = urljoin(take_url, page.trial.get("data-answer-url", "answer/"))
        csrf = self._csrf(page)
        videos = sorted(page.videos, key=lambda v: v.slot)
        for video in videos:  # preload="auto": the browser fetches every video of the page at once
            await self._fetch_video(video, take_url, page_kind=page.kind)
        # As trial.js does: each video's facts go with the answer, which the server takes once it believes
        # every rated video has ended (its clock against the page's first showing).
        if self.behaviour.watch == "full":
            for video in videos:  # one after another, as the page pauses the others while one plays
                await asyncio.sleep(video.duration + self.rng.uniform(0.05, 0.2))
            fractions = [1.0] * len(videos)
        else:
            latest = max((_min_accepted_watch_s(v.duration) for v in videos), default=0.0)
            await asyncio.sleep(max(0.0, shown_at + latest + 0.05 - time.monotonic()))
            elapsed = time.monotonic() - shown_at
            fractions = [1.0 if v.duration <= 0 else min(1.0, round(elapsed / v.duration, 3)) for v in videos]
        watch = [{"slot": v.slot, "ended": True, "watched_fraction": f, "seeks": 0, "pauses": 0, "replays": 0,
                  "hidden_ms": 0, "playback_errors": 0} for v, f in zip(videos, fractions, strict=True)]
        unlocked = time.monotonic()
        answers = self._answers(page)
        lo, hi = self.behaviour.think_ms
        think_s = self.rng.triangular(lo, hi, lo + (hi - lo) / 4) / 1000
        await asyncio.sleep(max(think_s, shown_at + self.behaviour.pace_s - time.monotonic()))
        body = {"trial": trial_id, "submission_id": str(uuid.uuid4()), "answers": answers,
                "answer_ms": int((time.monotonic() - unlocked) * 1000), "watch": watch}
        await self._send_answer(answer_url, csrf, body)

    async def _send_answer(self, url: str, csrf: str, body: dict) -> None:
        headers = {"X-CSRFToken": csrf}
        for attempt in range(TOO_EARLY_RETRIES):
            status, _, data = await self._call("answer", "POST", url, json=body, read="json", headers=headers)
            if status == 409 and data.get("error") == "too_early":
                await asyncio.sleep(0.1 * (attempt + 1))  # the server's clock: a moment more, the same answer
                continue
            break
        else:
            raise BotError("the server kept refusing the answer's 'ended' as too early")
        if status == 409 and data.get("error") == "answered":
            # Another submission already answered this trial (never expected from one bot): note, move on.
            raise BotError(f"trial {body['trial']} was already answered by another submission")
        if status not in (200, 201):
            raise BotError(f"answer answered {status}: {data.get('message') or data}")
        ack = Submission(self.bot_id, body["trial"], body["submission_id"], len(body["answers"]), status,
                         at=time.perf_counter())
        self.result.submissions.append(ack)
        if self.lose_responses and self.rng.random() < self.lose_responses:
            # As if that response had been lost on the way: the same submission again must write nothing.
            status, _, data = await self._call("answer", "POST", url, json=body, read="json", headers=headers)
            if status != 200 or data.get("saved") is not False:
                raise BotError(f"a resent submission was answered {status} {data}; expected 200, not saved")
            self.result.submissions.append(Submission(self.bot_id, body["trial"], body["submission_id"],
                                                      len(body["answers"]), status, True, time.perf_counter()))

    # -- answers ---------------------------------------------------------------------------------------
    def _check_value(self, page: Page):
        """The value an attention-check clip asks for, when the bot heard one (by stimulus token)."""
        for video in page.videos:
            expected = self.target.known_answers.get(video.token) or {}
            if "value" in expected:
                return expected["value"]
        return None

    def _seen(self, video: Video | None) -> float | None:
        """How natural this bot finds a clip (its own bias and this viewing's noise added), or None when the
        harness does not know the clip."""
        base = self.target.perceived.get(video.token) if video is not None else None
        if base is None:
            return None
        return max(0.0, min(1.0, base + (self._taste - 0.525) * 0.3 + self.rng.gauss(0, 0.1)))

    def _likert(self, points: int, check_value, seen: float | None = None) -> int:
        b = self.behaviour
        if check_value is not None and b.heeds_checks:
            return int(check_value)
        if b.ratings == "straight":
            value = 2 + round(self._straight_share * (points - 2))  # never the lowest point
            if self.rng.random() < 0.03:
                value = max(2, min(points, value + self.rng.choice((-1, 1))))
            if check_value is not None and value == check_value:
                value = value + 1 if value < points else value - 1
            return value
        if b.ratings == "random":
            return self.rng.randint(1, points)
        level = seen if seen is not None else self._taste + self.rng.gauss(0, 0.2)
        value = max(1, min(points, round(1 + (points - 1) * level)))
        if len(self._recent) >= 3 and all(v == value for v in self._recent[-3:]):
            value = value - 1 if value > 1 else value + 1  # a person does not give one value to everything
        self._recent.append(value)
        return value

    def _slider(self, check_value, video: Video | None = None) -> int:
        b = self.behaviour
        if check_value is not None and b.heeds_checks:
            return 0
        if b.ratings == "straight":
            return 50
        if b.ratings == "random":
            return self.rng.randint(0, 100)
        base = self.target.perceived.get(video.token) if video is not None else None
        if base is not None and base >= 0.95:  # MUSHRA: the one indistinguishable from the real thing gets ~100
            return self.rng.randint(92, 100)
        seen = self._seen(video)
        level = seen if seen is not None else self._taste + self.rng.gauss(0, 0.18)
        return max(0, min(100, round(100 * level)))

    def _pairwise(self, options: list[str], videos: list[Video] = ()) -> dict:
        seen = [self._seen(v) for v in videos[:2]]
        if self.behaviour.ratings == "straight":
            value = options[0]
        elif self.behaviour.ratings == "varied" and len(seen) == 2 and None not in seen:
            diff = seen[0] - seen[1]  # A looks better when positive; close calls are ties when allowed
            if abs(diff) < 0.08 and "tie" in options:
                value = "tie"
            else:
                side = "A" if diff > 0 else "B"
                strongest = [o for o in options if o.partition(":")[0] == side]
                level = min(len(strongest) - 1, int(abs(diff) * 2 * len(strongest))) if strongest else 0
                value = sorted(strongest, key=lambda o: int(o.partition(":")[2] or 0))[level] if strongest else side
        else:
            weights = [0.4 if o == "tie" else 1.0 for o in options]
            value = self.rng.choices(options, weights)[0]
        choice, _, strength = value.partition(":")
        answer = {"choice": choice}
        if strength:
            answer["strength"] = int(strength)
        return answer

    def _answers(self, page: Page) -> list[dict]:
        qtype = page.trial.get("data-qtype")
        check_value = self._check_value(page)
        videos = sorted(page.videos, key=lambda v: v.slot)
        by_slot = {v.slot: v for v in videos}
        if qtype == "likert":
            out = []
            for item, values in page.choices.items():
                points = max(int(v) for v in values)
                seen = self._seen(videos[0] if videos else None)
                out.append({"item": item, "slot": 0, "value": self._likert(points, check_value, seen)})
            return out
        if qtype == "slider":
            return [{"item": item, "slot": slot, "value": self._slider(check_value, by_slot.get(slot))}
                    for item, slot in page.sliders]
        if qtype == "pairwise":
            return [{"item": item, "slot": 0, **self._pairwise(values, videos)} for item, values in page.choices.items()]
        raise BotError(f"unknown question type {qtype!r}")


# ------------------------------------------------------------------------------------------- running
def make_bots(target: StudyTarget, *, n: int, behaviour: Behaviour | str, prefix: str | None = None,
              lose_responses: float = 0.0, timeout_s: float = 60.0, ramp_s: float = 0.0) -> list[Bot]:
    """n bots with unique ids (a bot id is the session's external id, so it must never repeat).

    ramp_s spreads their arrivals evenly over that many seconds.
    """
    if isinstance(behaviour, str):
        behaviour = BEHAVIOURS[behaviour]
    prefix = prefix or f"{behaviour.name}-{uuid.uuid4().hex[:10]}"
    return [Bot(target, bot_id=f"{prefix}-{i}", behaviour=behaviour, lose_responses=lose_responses,
                timeout_s=timeout_s, start_after_s=ramp_s * i / n) for i in range(n)]


@dataclass
class RunSummary:
    results: list[BotResult]
    wall_s: float

    @property
    def outcomes(self) -> Counter:
        return Counter(r.outcome for r in self.results)

    @property
    def submissions(self) -> list[Submission]:
        return [s for r in self.results for s in r.submissions]

    @property
    def errors(self) -> list[BotResult]:
        return [r for r in self.results if r.outcome == "error"]

    def calls(self, endpoint: str | None = None) -> list[Call]:
        return [c for r in self.results for c in r.calls if endpoint is None or c.endpoint == endpoint]

    def latencies(self) -> dict:
        """Per endpoint: requests, failures (network errors and 5xx), and latency percentiles in ms."""
        by_endpoint = defaultdict(list)
        for c in self.calls():
            by_endpoint[c.endpoint].append(c)
        return {name: latency_stats(calls) for name, calls in sorted(by_endpoint.items())}

    def as_dict(self) -> dict:
        subs = self.submissions
        first_sends = [s for s in subs if not s.resent]
        return {
            "bots": len(self.results),
            "completed": self.outcomes["completed"],
            "screened_out": self.outcomes["screened_out"],
            "unavailable": self.outcomes["unavailable"],
            "abandoned": self.outcomes["abandoned"],
            "errors": len(self.errors),
            "error_reasons": dict(Counter(r.reason for r in self.errors).most_common(5)),
            "unavailable_reasons": dict(Counter(r.reason for r in self.results if r.outcome == "unavailable")),
            "problems": dict(Counter(p for r in self.results for p in r.problems).most_common(5)),
            "submissions_acknowledged": len(first_sends),
            "ratings_acknowledged": sum(s.answers for s in first_sends),
            "resent_submissions": len(subs) - len(first_sends),
            "wall_s": round(self.wall_s, 3),
            "latency_ms": self.latencies(),
        }


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_stats(calls: list[Call]) -> dict:
    ok = sorted(c.seconds * 1000 for c in calls if c.status is not None and c.status < 500)
    return {
        "n": len(calls),
        "failed": sum(1 for c in calls if c.status is None or c.status >= 500),
        "p50": round(percentile(ok, 50), 1),
        "p90": round(percentile(ok, 90), 1),
        "p99": round(percentile(ok, 99), 1),
        "max": round(ok[-1], 1) if ok else float("nan"),
    }


async def run_bots_async(bots: list[Bot], *, concurrency: int | None = None, on_finish=None) -> RunSummary:
    """Run the bots, at most `concurrency` at once; `on_finish(result)` is called as each one ends."""
    gate = asyncio.Semaphore(max(1, concurrency or len(bots) or 1))

    async def one(bot: Bot) -> BotResult:
        async with gate:
            result = await bot.run()
        if on_finish:
            on_finish(result)
        return result

    started = time.perf_counter()
    results = await asyncio.gather(*(one(b) for b in bots))
    return RunSummary(list(results), time.perf_counter() - started)


def run_bots(bots: list[Bot], *, concurrency: int | None = None, on_finish=None) -> RunSummary:
    """Synchronous entry point (its own event loop); see run_bots_async."""
    return asyncio.run(run_bots_async(bots, concurrency=concurrency, on_finish=on_finish))


# ------------------------------------------------------------------------------- checking in the DB
def submissions_verify(submissions: list[Submission]) -> dict:
    """Compare what the server acknowledged with what the database holds (ORM reads).

    lost: acknowledged submissions whose trial is not answered by that submission with that many rows;
    duplicates: rating rows beyond one per (trial, item, slot), or beyond the acknowledged count;
    unacknowledged: answered trials of these bots that no acknowledgement mentions (a write the client
    never heard about; possible only when every retry failed after the server committed).
    """
    from django.db.models import Count

    from .models import Response, Trial

    acked = {}
    for s in submissions:
        acked.setdefault(s.trial, s)  # a resend carries the same submission id
    trials = {
        t.public_id: t
        for t in Trial.objects.filter(public_id__in=list(acked)).annotate(rows=Count("responses"))
    }
    lost = duplicates = 0
    for trial_id, s in acked.items():
        t = trials.get(trial_id)
        if t is None or t.answered_at is None or str(t.submission_id) != s.submission_id or t.rows < s.answers:
            lost += 1
        elif t.rows > s.answers:
            duplicates += t.rows - s.answers
    participant_ids = {t.participant_id for t in trials.values()}
    duplicates += sum(
        row["n"] - 1
        for row in Response.objects.filter(participant_id__in=participant_ids)
        .values("trial_id", "item", "slot").annotate(n=Count("id")).filter(n__gt=1)
    )
    unacknowledged = (
        Trial.objects.filter(participant_id__in=participant_ids, answered_at__isnull=False)
        .exclude(public_id__in=list(acked)).count()
    )
    return {
        "acknowledged": len(acked),
        "rows_acknowledged": sum(s.answers for s in acked.values()),
        "rows_in_db": Response.objects.filter(trial__public_id__in=list(acked)).count(),
        "lost": lost,
        "duplicates": duplicates,
        "unacknowledged": unacknowledged,
    }


# ------------------------------------------------------------------------------ a local server to hit
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """gunicorn serving this project on a free 127.0.0.1 port, in a subprocess (a context manager).

    It sees the same settings through the environment (DATABASE_URL and friends), plus this process's
    MEDIA_ROOT, so it serves the same database and stimuli as the caller.
    """

    def __init__(self, *, workers: int = 2, threads: int = 4, env: dict | None = None, log_path=None,
                 log_level: str = "warning", start_timeout_s: float = 60.0):
        self.workers, self.threads = workers, threads
        self.log_level = log_level
        self.extra_env = env or {}
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.proc = None
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.exited_early: int | None = None  # gunicorn's exit status when it was gone before being stopped

    def __enter__(self) -> LocalServer:
        import os
        import subprocess
        import sys
        import urllib.request

        from django.conf import settings

        # Every bot comes from 127.0.0.1: the per-address limit on new sessions would count them all as one
        # client, so it is left out here; the per-session limits stay as configured.
        limits = ",".join(p for p in settings.PARTICIPANT_RATE_LIMITS.split(",") if not p.strip().startswith("start="))
        env = {**os.environ, "MEDIA_ROOT": str(settings.MEDIA_ROOT), "PARTICIPANT_RATE_LIMITS": limits,
               **self.extra_env}
        env.setdefault("DJANGO_SETTINGS_MODULE", "evalsite.settings")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "evalsite.wsgi:application", "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(self.workers), "--threads", str(self.threads), "--worker-class", "gthread",
             "--log-level", self.log_level, "--graceful-timeout", "10"],
            env=env, cwd=str(settings.BASE_DIR), stdout=log, stderr=log,
        )
        if log is not subprocess.DEVNULL:
            log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with status {self.proc.returncode} while starting"
                                   + (f"; see {self.log_path}" if self.log_path else ""))
            try:
                with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError(f"gunicorn did not answer on {self.base_url} within {self.start_timeout_s:.0f} s")

    def __exit__(self, *exc) -> None:
        import signal
        import subprocess

        if self.proc is None:
            return
        if self.proc.poll() is not None:
            self.exited_early = self.proc.returncode
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
