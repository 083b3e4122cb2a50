"""A small placeholder corpus and study (synthetic speech from espeak-ng on a drawn face, clips in seconds, no
renderer or model) that the tests build on, and the audio/video-check clip every demo corpus needs.

`manage.py demo` itself runs the whole loop with rendered stimuli and trained models (studies/demo_pipeline.py).
Every step here is idempotent: a second call finds everything made.
"""
from __future__ import annotations

import random
import wave
from pathlib import Path

from django.conf import settings
from django.db import transaction

from .models import Condition, Corpus, Utterance
from .rendering import av_check_condition

DEMO_CORPUS = "demo"
SENTENCES = [
    ("spk-a", "en-us", "The quick brown fox jumps over the lazy dog near the river bank."),
    ("spk-b", "en-gb", "Please call Stella and ask her to bring these things with her from the store."),
    ("spk-a", "en-us", "I never said she stole my money, but somebody certainly did."),
    ("spk-b", "en-gb", "We will meet at the station tomorrow morning, just after nine."),
    ("spk-a", "en-us", "That sounds like a wonderful idea, let us try it this weekend."),
    ("spk-b", "en-gb", "The weather was cold and windy, so we stayed inside and read."),
]
QUICK_SENTENCES = [
    ("spk-a", "en-us", "Hello there."),
    ("spk-b", "en-gb", "Good morning."),
    ("spk-a", "en-us", "Thank you."),
]
CONDITIONS = [
    ("ground_truth", Condition.Kind.GROUND_TRUTH, "The utterance's own recorded motion."),
    ("random_alignment", Condition.Kind.RANDOM_ALIGNMENT, "Motion of another utterance of the same speaker, cut or looped."),
    ("still", Condition.Kind.STILL, "Neutral face, still head."),
    ("attention-check", Condition.Kind.ATTENTION_CHECK, "A clip that asks for a known answer."),
    ("av-check", Condition.Kind.AV_CHECK, "Spoken digits the participant types in."),
]
ATTENTION_TEXT = "This is an attention check. Please give the lowest rating, one, to every question on this page."
ATTENTION_CAPTION = "Attention check: choose the lowest rating (1) for every question"
DIGIT_WORDS = "zero one two three four five six seven eight nine".split()


def _speak_once(rel: str, text: str, voice: str) -> float:
    from render import placeholder

    path = Path(settings.MEDIA_ROOT) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        placeholder.speak(text, path, voice=voice)
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def demo_corpus_build(*, quick: bool = False, progress=None) -> Corpus:
    """Create (once) the demo corpus's utterances, conditions and every placeholder stimulus."""
    from . import tasks

    corpus_name = demo_corpus_name(quick)
    corpus, _ = Corpus.objects.get_or_create(
        name=corpus_name, defaults={"description": "Synthetic speech (espeak-ng) for the demo study."}
    )
    conditions = {}
    for name, kind, description in CONDITIONS:
        conditions[name], _ = Condition.objects.get_or_create(name=name, defaults={"kind": kind, "description": description})
    sentences = QUICK_SENTENCES if quick else SENTENCES
    jobs = []
    for i, (speaker, voice, text) in enumerate(sentences, start=1):
        name = f"utt{i:02d}"
        rel = f"corpora/{corpus_name}/{name}.wav"
        duration = _speak_once(rel, text, voice)
        with transaction.atomic():
            utt, _ = Utterance.objects.get_or_create(
                corpus=corpus, name=name,
                defaults={"speaker": speaker, "transcript": text, "audio_path": rel, "duration_s": duration,
                          "metadata": {"role": "speech", "voice": voice}},
            )
        for cond in ("ground_truth", "random_alignment", "still"):
            jobs.append((utt, conditions[cond], None))
    rng = random.Random(2026)
    for j, voice in enumerate(("en-us", "en-gb")):
        name = f"attention{j + 1}"
        rel = f"corpora/{corpus_name}/{name}.wav"
        duration = _speak_once(rel, ATTENTION_TEXT, voice)
        utt, _ = Utterance.objects.get_or_create(
            corpus=corpus, name=name,
            defaults={"speaker": f"spk-{'ab'[j]}", "transcript": ATTENTION_TEXT, "audio_path": rel, "duration_s": duration,
                      "metadata": {"role": "attention_check", "expected_answer": {"value": 1}}},
        )
        jobs.append((utt, conditions["attention-check"], ATTENTION_CAPTION))
    jobs.append(_av_check_utterance(corpus, rng) + (AV_CHECK_CAPTION,))
    for n, (utt, cond, caption) in enumerate(jobs, start=1):
        # Run in this process through Celery's task machinery (eagerly): the demo needs no worker for it.
        # The seed follows the clip's place in this fixed list, not a database id, so a corpus rebuilt after
        # its rows were deleted (ids go on counting) finds its clips in the cache instead of making them again.
        tasks.render_placeholder_stimulus.apply(args=(utt.pk, cond.pk, "avatar", 1000 + n, caption), throw=True)
        if progress:
            progress(n, len(jobs))
    return corpus


AV_CHECK_CAPTION = "Listen, then type the three numbers you hear"


def _av_check_utterance(corpus: Corpus, rng: random.Random) -> tuple[Utterance, Condition]:
    """The corpus's audio/video-check utterance: three spoken digits (made once)."""
    condition = av_check_condition()
    digits = "".join(str(rng.randrange(1, 10)) for _ in range(3))
    av_text = "Please type these three numbers: " + ", ".join(DIGIT_WORDS[int(d)] for d in digits) + "."
    rel = f"corpora/{corpus.name}/avcheck.wav"
    duration = _speak_once(rel, av_text, "en-us")
    utt, _ = Utterance.objects.get_or_create(
        corpus=corpus, name="avcheck",
        defaults={"speaker": "spk-a", "transcript": av_text, "audio_path": rel, "duration_s": duration,
                  "metadata": {"role": "av_check", "expected_answer": {"digits": digits}}},
    )
    return utt, condition


def av_check_utterance_ensure(corpus: Corpus) -> Utterance:
    """Give a corpus an audio/video-check utterance (three spoken digits); `render_study` renders it on the
    study's first embodiment when the study has an av_check page."""
    return _av_check_utterance(corpus, random.Random(2026))[0]


def demo_corpus_name(quick: bool) -> str:
    return f"{DEMO_CORPUS}-quick" if quick else DEMO_CORPUS


def demo_spec_text(quick: bool = False) -> str:
    text = (Path(__file__).parent / "specs" / "demo.yaml").read_text()
    if quick:
        text = text.replace("slug: demo-face-motion", "slug: demo-face-motion-quick")
        text = text.replace("corpus: demo", f"corpus: {demo_corpus_name(True)}")
    return text
