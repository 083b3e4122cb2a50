"""Blinding: nothing a participant can reach names a condition, model, utterance, corpus or speaker —
not the pages, not the URLs, not the response headers, not the video files' metadata; video tokens
are served only to sessions that include them. On a MUSHRA screen nothing but watching tells the hidden
reference: the rated videos' markup is alike, and the open reference has a URL of its own."""
import re

import ffmpeg
from django.conf import settings
from django.db.models import F
from django.test import Client
from django.urls import reverse

from studies.models import Condition, Corpus, Participant, Stimulus, TrialStimulus, Utterance


def secret_words():
    words = set(Condition.objects.values_list("name", flat=True))
    words |= {w.replace("_", " ") for w in words}
    words |= set(Utterance.objects.values_list("name", flat=True))
    words |= set(Utterance.objects.values_list("speaker", flat=True))
    words |= set(Corpus.objects.values_list("name", flat=True))
    # Roles of a slider trial's videos would reveal the hidden reference and the anchor.
    words |= {"hidden_reference", "hidden reference", "anchor", "data-role"}
    # "still" is also an ordinary English word; the condition is checked as a marked-up name instead.
    words.discard("still")
    return {w for w in words if w}


def test_no_page_url_or_header_names_a_condition(driver):
    seen = []
    client = driver.client
    orig_get, orig_post = client.get, client.post

    def record(method):
        def inner(path, *args, **kwargs):
            response = method(path, *args, **kwargs)
            seen.append((path, response))
            return response
        return inner

    client.get, client.post = record(orig_get), record(orig_post)
    driver.start()
    final = driver.complete()
    assert final.status_code == 200
    for trial in driver.participant.trials.all():
        for slot in trial.slots.all():
            url = reverse("stimulus_video", args=[slot.url_token])  # as the page links it
            seen.append((url, client.get(url, HTTP_RANGE="bytes=0-99")))
    words = secret_words()
    assert len(seen) > 20
    for path, response in seen:
        headers = " ".join(f"{k}: {v}" for k, v in response.items())
        body = b"" if response.streaming or response.get("Content-Type", "").startswith("video") else response.content
        text = path + " " + headers + " " + body.decode("utf-8", "replace")
        for word in words:
            assert word not in text, (word, path)
        assert not re.search(r"data-(condition|utterance)|\bstill\.mp4", text)


def test_a_slider_screens_rated_videos_look_alike_and_the_open_reference_shares_no_url_with_them(driver):
    driver.start()
    spec = driver.participant.version.spec
    slider_page = next(i for i, p in enumerate(spec["pages"])
                       if p["type"] == "trials" and spec["questions"][p["question"]]["type"] == "slider")
    Participant.objects.filter(pk=driver.participant.pk).update(page_index=slider_page)
    assert spec["questions"][spec["pages"][slider_page]["question"]]["reference"]
    for _ in range(3):  # every slider screen of the session
        trial = driver.current_trial()
        hidden = trial.slots.get(role=TrialStimulus.Role.HIDDEN_REFERENCE)
        # A rendered hidden reference may be a frame longer than the other clips, and the open reference is
        # exactly as long: the page must not tell their lengths.
        Stimulus.objects.filter(pk=hidden.stimulus_id).update(duration_s=F("duration_s") + 0.04)
        html = driver.page().content.decode()
        rated = re.findall(r'<figure class="video-slot" data-slot="\d+">.*?</figure>', html, re.S)
        assert len(rated) == 3
        rated_tokens = [re.search(r"/v/([A-Za-z0-9_-]+)\.mp4", f).group(1) for f in rated]
        # Alike but for their slot numbers and tokens; every video on the page, the reference too, gives one duration.
        alike = {re.sub(r"/v/[A-Za-z0-9_-]+\.mp4", "/v/T.mp4", re.sub(r'(slot="|[so]-|<figcaption>)\d+', r"\1N", f))
                 for f in rated}
        assert len(alike) == 1, alike
        assert len(set(re.findall(r'data-duration="([^"]+)"', html))) == 1
        reference = re.search(r'<figure class="video-slot open-reference".*?/v/([A-Za-z0-9_-]+)\.mp4', html, re.S)
        assert reference and reference.group(1) not in rated_tokens
        assert hidden.stimulus.token in rated_tokens  # the same video as the reference, under another URL
        assert trial.slots.get(role=TrialStimulus.Role.REFERENCE).stimulus_id == hidden.stimulus_id
        driver.watch_all(trial, references=False)
        assert driver.answer(trial).status_code == 201


def test_video_files_carry_no_metadata_that_names_anything(db):
    words = secret_words()
    for stimulus in Stimulus.objects.all():
        probe = ffmpeg.probe(str(settings.MEDIA_ROOT / stimulus.file))
        tags = dict(probe["format"].get("tags", {}))
        for stream in probe["streams"]:
            tags.update({f"s{stream['index']}.{k}": v for k, v in stream.get("tags", {}).items()})
        blob = " ".join(f"{k}={v}" for k, v in tags.items()) + " " + probe["format"]["filename"]
        for word in words | {"still"}:
            assert word not in blob.split("/")[-1], (word, blob)
        assert stimulus.token in stimulus.file


def test_videos_are_served_only_to_sessions_that_include_them(driver, demo_study):
    driver.start()
    mine = {s.stimulus.token for t in driver.participant.trials.all() for s in t.slots.all()}
    not_mine = Stimulus.objects.exclude(token__in=mine).first()
    one = next(iter(mine))
    assert driver.client.get(reverse("stimulus_video", args=[one])).status_code == 200
    stranger = Client()
    assert stranger.get(reverse("stimulus_video", args=[one])).status_code == 404
    if not_mine is not None:
        assert driver.client.get(reverse("stimulus_video", args=[not_mine.token])).status_code == 404
    assert driver.client.get(reverse("stimulus_video", args=["guessed-token"])).status_code == 404


def test_range_requests_return_exactly_the_asked_bytes(driver):
    driver.start()
    stimulus = driver.participant.trials.first().slots.first().stimulus
    data = (settings.MEDIA_ROOT / stimulus.file).read_bytes()
    url = reverse("stimulus_video", args=[stimulus.token])
    r = driver.client.get(url, HTTP_RANGE="bytes=100-199")
    assert r.status_code == 206 and r["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert b"".join(r.streaming_content) == data[100:200]
    r = driver.client.get(url, HTTP_RANGE="bytes=-50")
    assert b"".join(r.streaming_content) == data[-50:]
    r = driver.client.get(url, HTTP_RANGE=f"bytes={len(data)}-")
    assert r.status_code == 416
    r = driver.client.get(url)
    assert r.status_code == 200 and b"".join(r.streaming_content) == data and r["Accept-Ranges"] == "bytes"
