"""SYNTHETIC demo corpus: espeak-ng speech with facial and head motion generated from that speech.

No real face-motion corpus can be downloaded here, so the project makes a labelled SYNTHETIC one. Every
trace of it says so: each clip's metadata has `source="synthetic"`, `metadata.csv` has a `synthetic`
column set to 1, and nothing here should be reported as human motion. Its purpose is to give the models
something learnable and the objective metrics something to tell models apart: the motion is driven by
the speech the way the literature describes it, with speaker idiosyncrasies and noise on top.

How the motion follows the speech (`motion_from_speech`; times are at 25 fps unless noted):

- Jaw and lips follow the loudness envelope (RMS in dB over the 24 dB below the utterance's loud frames,
  smoothed over ~20 ms): `jawOpen`, `mouthLowerDown*`; rounding (`mouthFunnel`, `mouthPucker`) where voiced frames
  have a low spectral centroid (a proxy for the low F2 of /u/ and /o/), spreading (`mouthStretch*`) where
  it is high (/i/); `mouthClose` and a little `mouthPress*` in pauses.
  The mouth LEADS the sound by `MotionStyle.lead_ms` (40–70 ms per speaker, 50 ms by default): articulators
  move into position before the acoustic consequence is heard, so the motion at time t is computed from
  the audio at t + lead.
- Brows (`browInnerUp`, `browOuterUp*`) and head nods (`rx`, positive = nose down) follow pitch accents:
  local maxima of F0 (librosa.yin, voiced frames only) above the utterance's median F0 with at least one
  semitone of prominence. Each accent triggers, with some probability, a brow raise and a nod with a
  small random delay (brows −40…+100 ms, nods +30…+150 ms) and a random amplitude that grows with the
  accent's prominence.
- Blinks come from a renewal process with gamma-distributed intervals (shape 3, speaker mean ~3 s), run in
  an operational time that goes faster just after phrase ends and pauses, so blinks cluster there. Each
  blink is a 150–250 ms closing-then-slower-opening shape on `eyeBlinkLeft`/`eyeBlinkRight`.
- Head sway: slow band-limited noise (< 0.4 Hz) in pitch, yaw and roll (a few degrees) and in
  translation (a few mm), plus a small lean and nod with loudness.
- Emotion: "happy" adds a smile (`mouthSmile*`, `cheekSquint*`) and a little extra brow and head motion;
  "emphatic" raises the amplitude of jaw, brows and nods; "neutral" is the baseline.
- Speakers: per-speaker gains (jaw, lips, brows, head), lead, blink rate and asymmetries.
- Sensor-like noise: Gaussian on every blendshape channel (σ ≈ 0.01) and on the head pose, then
  blendshape weights are clipped to 0..1.

The corpus (`make_corpus`) is written in the folder format `import_corpus` reads: `<name>.wav` (16 kHz mono
PCM) beside `<name>.npz` (a MotionClip, layout `arkit52` with head pose, as many frames as
round(duration × fps)) and `metadata.csv` (`name,speaker,emotion,transcript,synthetic`). It is deterministic
for a seed and idempotent: a manifest records each utterance's recipe and file hashes, and a second call
rewrites nothing that is already there and unchanged.

`robot_pairs` makes training pairs for the robot inverse model (landmarks → motor commands) from a
SYNTHETIC servo face, `sim-face`: it stands in for a real robot's calibration recordings (random motor
commands, the face filmed and tracked) until such recordings exist.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d, median_filter
from scipy.signal import butter, find_peaks, sosfiltfilt

from . import audio
from .face_geometry import apply_head_pose, arkit_to_ibug68
from .layouts import ARKIT52
from .motion import MotionClip, frames_for_duration

GENERATOR_VERSION = 1
METADATA_COLUMNS = ("name", "speaker", "emotion", "transcript", "synthetic")
MANIFEST_NAME = ".synthetic_manifest.json"  # hidden: importers skip dot-files
EMOTIONS = ("neutral", "happy", "emphatic")
_A = {name: i for i, name in enumerate(ARKIT52)}


class SyntheticCorpusError(RuntimeError):
    """The synthetic corpus cannot be made (espeak-ng missing or failing, a bad argument); says what to do."""


# --- speech ------------------------------------------------------------------------------------------------

SENTENCES: tuple[str, ...] = (
    # statements
    "The train to the coast leaves from platform four.",
    "My grandmother grew tomatoes on the balcony every summer.",
    "We painted the kitchen a pale shade of green.",
    "The meeting has been moved to Thursday afternoon.",
    "He forgot his umbrella on the bus again.",
    "Most of the snow had melted by the end of March.",
    "The old bridge was closed for repairs last winter.",
    "She plays the cello in a small string quartet.",
    "Our neighbours are building a wooden shed in their garden.",
    "The soup needs a little more salt and pepper.",
    "I usually walk to work when the weather is nice.",
    "The museum opens an hour later on Sundays.",
    "They found a tiny kitten hiding under the porch.",
    "The report is due at the end of next week.",
    "A strong wind blew the leaves across the road.",
    "He learned to swim in a cold mountain lake.",
    "The bakery on the corner sells fresh bread every morning.",
    "We spent the whole afternoon looking for the missing keys.",
    "The children built a sandcastle near the water.",
    "Her brother works as a nurse at the city hospital.",
    "The printer on the second floor is out of paper.",
    "I think the film starts at half past seven.",
    "The garden looks much better after the rain.",
    "Nobody knew the answer to the last question.",
    "The shop will be closed for the holidays.",
    "He keeps a notebook full of ideas for new songs.",
    "The road winds slowly up towards the village.",
    "Our flight home was delayed by nearly three hours because of the fog.",
    "She moved to a quiet town near the mountains.",
    "The orange cat sleeps on the warm windowsill.",
    "I think I left the letter on the little table by the front door.",
    "The lecture covered the history of early computers.",
    "We ordered two pizzas and a large salad.",
    "The river rises quickly after a heavy storm.",
    "He repaired the old clock with a pair of tweezers.",
    "The team practises twice a week in the evening.",
    "My phone battery died halfway through the call.",
    "The recipe calls for three eggs and a cup of flour.",
    "Most people prefer the window seat on long journeys.",
    "The festival attracts visitors from all over the country.",
    "She always reads the last page of a book first.",
    "The nearest bus stop is just around the corner, past the bank.",
    "We watched the sun go down behind the hills.",
    "He speaks three languages but rarely uses them.",
    "The new library has a lovely reading room.",
    "Our teacher told us a story about her travels.",
    "The coffee machine in the office is broken again.",
    "A small boat drifted slowly across the harbour.",
    # questions
    "Could you pass me the salt, please?",
    "Have you ever been to the north of Scotland?",
    "What time does the last bus leave tonight?",
    "Do you remember where we parked the car?",
    "Why is the kitchen light still on in the middle of the night?",
    "Would you like tea or coffee with your breakfast?",
    "Excuse me, is this the right way to the railway station?",
    "How long have you been learning the piano?",
    "Where did you buy that beautiful blue jacket?",
    "Can we finish the rest of this tomorrow?",
    "Did anyone feed the fish this morning?",
    "Who left the garden gate wide open?",
    "Are you coming to the party on Saturday?",
    "What would you do with a whole year off?",
    "Should we take the long road or the short one?",
    "How many people are coming for dinner on Friday evening?",
    "Does this bus stop near the town hall?",
    "When did you last see your cousin?",
    "Have you finished reading the book I lent you?",
    "Which of these two paintings do you prefer?",
    "Could you explain that again, a little more slowly?",
    "Is there a pharmacy open near here on Sundays?",
    "Why do the birds fly south in the autumn?",
    "Would it be possible to change my appointment?",
    "What did the doctor say about your knee?",
    "Can you hear the music from the other room?",
    "Do you know how to fix a bicycle chain?",
    "Where should we put the new bookshelf in the living room?",
    "How did the interview go this morning?",
    "Is it true that you met the mayor yesterday?",
    "Did you really walk all the way from the station?",
    "What is the best thing you have ever eaten?",
    "Shall we meet outside the cinema at eight?",
    "Have the results of the survey come back yet?",
    "Why didn't you tell me about the change of plan?",
    "Would you mind closing the window, please?",
    # exclamations
    "What a wonderful surprise to see you here!",
    "I can't believe we actually won the whole tournament!",
    "Look out, the floor in the hallway is still wet!",
    "That was the best concert I have ever been to!",
    "Oh no, I left my wallet at the restaurant!",
    "Happy birthday, and many happy returns of the day!",
    "Wow, the view from the top is absolutely amazing!",
    "Stop right there and don't touch anything!",
    "We did it, the project is finally finished!",
    "What a terrible mess the storm has made!",
    "Hurry up, or we will miss the beginning!",
    "This is the most delicious cake in the world!",
    "I never want to hear that song again!",
    "Congratulations on passing your driving test!",
    "Watch out for the bicycle behind you!",
    "How lovely it is to be home again!",
    "That is absolutely not what I asked for!",
    "Quick, the bus is just about to leave!",
    "What a beautiful morning for a long walk!",
    "I am so glad you could come after all!",
    "Be careful, the soup is still very hot, so wait a moment!",
    "Thank you so much for all your help with the move!",
    "Goodness me, look at the size of that dog!",
    "We are going to the seaside tomorrow!",
    # mixed and longer
    "If it rains tomorrow, we will have the picnic indoors.",
    "Although it was late, the shop was still full of people.",
    "Please remember to switch off the lights when you leave.",
    "The more I think about it, the less I like the idea.",
    "First we need flour, then sugar, and finally some butter.",
    "You can take the train, but the bus is much cheaper.",
    "Turn left at the church and keep going until the bridge.",
    "When the bell rings, everybody goes back to class.",
    "I would rather stay at home and read a good book.",
    "Honestly, I have no idea what happened to the cake.",
    "Send me a short message when you arrive at the hotel, so I know you are safe.",
    "Every morning, rain or shine, she runs five miles before breakfast.",
)


@dataclass(frozen=True)
class MotionStyle:
    """How one speaker in one emotion moves: gains on the speech-driven parts, timing and noise."""

    emotion: str = "neutral"
    jaw_gain: float = 1.0
    lip_gain: float = 1.0
    brow_gain: float = 1.0
    head_gain: float = 1.0
    smile: float = 0.0             # baseline smile weight (happy speakers)
    asymmetry: float = 0.0         # left minus right, relative, for smiles and outer brows
    lead_ms: float = 50.0          # the mouth leads the sound by this much
    blink_mean_s: float = 3.0      # mean interval between blinks
    noise_std: float = 0.01        # sensor noise on every blendshape channel

    def __post_init__(self):
        if self.emotion not in EMOTIONS:
            raise ValueError(f"emotion must be one of {', '.join(EMOTIONS)}, got {self.emotion!r}")


@dataclass(frozen=True)
class Speaker:
    """A SYNTHETIC speaker: one espeak-ng voice at one pitch, with its own way of moving."""

    name: str
    voice: str
    pitch: int          # espeak-ng pitch 0..99
    wpm: int            # typical speaking rate, words per minute
    jaw_gain: float
    lip_gain: float
    brow_gain: float
    head_gain: float
    asymmetry: float
    lead_ms: float
    blink_mean_s: float

    def style(self, emotion: str) -> MotionStyle:
        jaw, brow, head, smile = {"neutral": (1.0, 1.0, 1.0, 0.03), "happy": (1.05, 1.15, 1.1, 0.35),
                                  "emphatic": (1.2, 1.35, 1.5, 0.0)}[emotion]
        return MotionStyle(emotion=emotion, jaw_gain=self.jaw_gain * jaw, lip_gain=self.lip_gain,
                           brow_gain=self.brow_gain * brow, head_gain=self.head_gain * head, smile=smile,
                           asymmetry=self.asymmetry, lead_ms=self.lead_ms, blink_mean_s=self.blink_mean_s)


SPEAKERS: tuple[Speaker, ...] = (
    Speaker("spk-us-m", "en-us", 42, 160, 1.00, 1.00, 1.00, 1.00, 0.05, 50.0, 3.0),
    Speaker("spk-gb-m", "en-gb", 36, 150, 0.85, 0.90, 0.75, 0.80, -0.08, 40.0, 3.6),
    Speaker("spk-sc-m", "en-gb-scotland", 50, 170, 1.15, 1.10, 1.30, 1.20, 0.10, 70.0, 2.5),
    Speaker("spk-us-f", "en-us+f3", 62, 175, 0.95, 1.20, 1.20, 0.90, -0.05, 55.0, 2.8),
    Speaker("spk-en-m3", "en+m3", 30, 140, 1.10, 0.85, 0.90, 1.30, 0.00, 65.0, 3.4),
    Speaker("spk-rp-f", "en-gb-x-rp+f2", 58, 165, 0.90, 1.05, 1.10, 0.75, 0.12, 45.0, 3.2),
)
SPEAKERS_BY_NAME = {s.name: s for s in SPEAKERS}
# Pitch and rate offsets a speaker uses in each emotion (emphatic and happy speech are higher and faster).
_EMOTION_VOICE = {"neutral": (0, 0), "happy": (8, 8), "emphatic": (5, 15)}


def speak(text: str, wav_path: str | os.PathLike, *, voice: str = "en-us", words_per_minute: int = 160,
          pitch: int = 50) -> Path:
    """Say `text` with espeak-ng and write it to `wav_path` as 16 kHz mono 16-bit PCM WAV, atomically.

    The text goes to espeak-ng through a file, so text starting with "-" is never read as an option.
    Raises SyntheticCorpusError when espeak-ng is missing or cannot use `voice`.
    """
    if not text.strip():
        raise SyntheticCorpusError("speak() needs some text to say")
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SyntheticCorpusError("espeak-ng is not installed; install the Debian package espeak-ng "
                                   "(apt-get install espeak-ng) to make the synthetic corpus")
    base, _, variant = voice.partition("+")
    voices, variants = _installed_voices(espeak)
    if base.lower() not in voices or (variant and variant.lower() not in variants):
        # espeak-ng quietly falls back to its default voice for unknown names; refuse instead.
        raise SyntheticCorpusError(f"espeak-ng has no voice {voice!r}; list the installed voices with "
                                   f"`espeak-ng --voices=en` (and variants for '+…' with `--voices=variant`)")
    with tempfile.TemporaryDirectory(prefix="speak-") as scratch:
        text_file, raw = Path(scratch) / "text.txt", Path(scratch) / "raw.wav"
        text_file.write_text(text, encoding="utf-8")
        command = [espeak, "-v", voice, "-s", str(int(words_per_minute)), "-p", str(int(pitch)),
                   "-w", str(raw), "-f", str(text_file)]
        result = subprocess.run(command, capture_output=True, check=False)
        if result.returncode != 0 or not raw.exists() or raw.stat().st_size <= 44:
            message = (result.stderr or result.stdout or b"").decode("utf-8", "replace").strip()[-300:]
            raise SyntheticCorpusError(f"espeak-ng could not speak with voice {voice!r} ({message or 'no output'}); "
                                       f"list the installed voices with `espeak-ng --voices=en`")
        return audio.transcode_to_wav(raw, wav_path, sample_rate=audio.SAMPLE_RATE)


@functools.lru_cache(maxsize=4)
def _installed_voices(espeak: str) -> tuple[frozenset, frozenset]:
    """(voice names, variant names) espeak-ng knows, lower-cased: languages, voice names and file names."""
    def table(*args) -> set[str]:
        result = subprocess.run([espeak, *args], capture_output=True, text=True, check=False)
        names = set()
        for line in result.stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 5:
                names.update({fields[1].lower(), fields[3].lower(), fields[4].lower(),
                              fields[4].rsplit("/", 1)[-1].lower()})
        return names

    return frozenset(table("--voices")), frozenset(table("--voices=variant"))


# --- motion from speech ----------------------------------------------------------------------------------

_HOP_S = 0.01  # analysis hop: 100 feature frames per second
_LEVEL_RANGE_DB = 24.0  # openness runs from 24 dB below the utterance's loud frames (0) to them (1)
_SILENCE_DBFS = -60.0   # below this level nothing counts as speech, however quiet the utterance


@dataclass(frozen=True)
class SpeechFeatures:
    """Frame-level descriptions of the audio at 100 Hz (times are window centres)."""

    times: np.ndarray       # [F] s
    level_db: np.ndarray    # [F] RMS level, dB re full scale
    openness: np.ndarray    # [F] 0..1, loudness relative to the utterance's loud frames
    centroid: np.ndarray    # [F] spectral centroid, Hz
    voiced: np.ndarray      # [F] bool
    f0: np.ndarray          # [F] Hz, NaN where unvoiced
    activity: np.ndarray    # [F] 0..1, smoothed speech activity (0 in pauses)


def speech_features(samples: np.ndarray, sr: int) -> SpeechFeatures:
    """Loudness, spectral centroid, voicing and F0 of mono speech `samples` at 100 frames per second."""
    import librosa

    y = np.asarray(samples, dtype=np.float32)
    hop = int(round(sr * _HOP_S))
    window = int(round(sr * 0.04))
    n = int(np.ceil(len(y) / hop))
    times = (np.arange(n) + 0.5) * hop / sr
    padded = np.pad(y.astype(np.float64), (window, window))
    csum = np.concatenate([[0.0], np.cumsum(padded ** 2)])
    centres = np.round(times * sr).astype(np.int64) + window
    lo, hi = centres - window // 2, centres + window // 2
    rms = np.sqrt((csum[hi] - csum[lo]) / (hi - lo))
    level_db = 20 * np.log10(rms + 1e-5)
    loud = max(float(np.percentile(level_db, 95)), _SILENCE_DBFS + _LEVEL_RANGE_DB)  # silence stays closed
    openness = np.clip((level_db - (loud - _LEVEL_RANGE_DB)) / _LEVEL_RANGE_DB, 0.0, 1.0)

    spec_window = 512
    centroid = librosa.feature.spectral_centroid(y=np.pad(y, (0, hop)), sr=sr, n_fft=spec_window,
                                                 hop_length=hop, center=True)[0][:n]
    zcr = librosa.feature.zero_crossing_rate(np.pad(y, (0, hop)), frame_length=window, hop_length=hop)[0][:n]
    f0 = librosa.yin(np.pad(y, (0, hop)), fmin=60, fmax=450, sr=sr, frame_length=1024, hop_length=hop)[:n]
    centroid = np.pad(centroid, (0, n - len(centroid)), mode="edge")
    zcr = np.pad(zcr, (0, n - len(zcr)), mode="edge")
    f0 = np.pad(f0, (0, n - len(f0)), mode="edge")

    voiced = (openness > 0.35) & (zcr < 0.2) & (f0 > 65) & (f0 < 440)
    if voiced.sum() >= 5:
        median = np.median(f0[voiced])
        voiced &= (f0 > median / 1.7) & (f0 < median * 1.7)  # octave jumps and fricative noise
    f0 = np.where(voiced, median_filter(f0, size=5, mode="nearest"), np.nan)
    activity = np.clip(gaussian_filter1d((openness > 0.15).astype(float), sigma=8), 0.0, 1.0)
    return SpeechFeatures(times, level_db, openness, centroid, voiced, f0, activity)


def pitch_accents(features: SpeechFeatures) -> list[tuple[float, float]]:
    """(time s, prominence in semitones) of each pitch accent: an F0 peak above the median, ≥ 1 st prominent."""
    f0 = features.f0
    voiced = np.isfinite(f0)
    if voiced.sum() < 10:
        return []
    semitones = 12 * np.log2(f0 / np.nanmedian(f0))
    index = np.arange(len(f0))
    filled = np.interp(index, index[voiced], semitones[voiced])
    contour = gaussian_filter1d(filled, sigma=3)
    peaks, props = find_peaks(contour, height=0.5, prominence=1.0, distance=25)
    near_voice = np.convolve(voiced, np.ones(7), mode="same") > 0
    return [(float(features.times[p]), float(prom)) for p, prom in zip(peaks, props["prominences"])
            if near_voice[p]]


def _bump(t: np.ndarray, peak_s: float) -> np.ndarray:
    """A smooth one-sided pulse that is 0 before t = 0, peaks (at 1) at `peak_s` and decays over ~3 × peak_s."""
    tau = np.clip(t / peak_s, 0.0, None)
    return tau ** 3 * np.exp(3.0 * (1.0 - tau))


def _slow_noise(rng: np.random.Generator, n: int, fps: float, cutoff_hz: float, channels: int = 1) -> np.ndarray:
    """Band-limited Gaussian noise [n, channels] with unit standard deviation (zero-phase low-pass)."""
    pad = int(4 * fps / cutoff_hz)
    white = rng.standard_normal((n + 2 * pad, channels))
    sos = butter(2, min(cutoff_hz / (fps / 2), 0.99), output="sos")
    noise = sosfiltfilt(sos, white, axis=0)[pad:pad + n]
    # Scale by the filter's theoretical spread (from a long run) rather than this clip's, so short clips
    # keep their natural variation in amplitude.
    return noise / _filter_std(sos)


_FILTER_STD: dict[bytes, float] = {}


def _filter_std(sos: np.ndarray) -> float:
    key = sos.tobytes()
    if key not in _FILTER_STD:
        probe = sosfiltfilt(sos, np.random.default_rng(0).standard_normal(40_000))
        _FILTER_STD[key] = float(probe[2000:-2000].std())
    return _FILTER_STD[key]


def _blink_times(rng: np.random.Generator, times: np.ndarray, activity: np.ndarray, mean_s: float) -> list[float]:
    """Blink onsets: a gamma renewal process (shape 3) run in an operational time that speeds up after
    phrase ends and pauses, so blinks are more likely there while the overall rate stays 1 / mean_s."""
    dt = times[1] - times[0] if len(times) > 1 else _HOP_S
    speech_end = np.clip(-np.gradient(activity), 0.0, None)  # activity falling: a phrase ends
    pause = 1.0 - activity
    boost = gaussian_filter1d(speech_end, sigma=15) * 40.0 + 0.8 * pause
    rate = 1.0 + boost
    rate = rate / rate.mean()
    operational = np.concatenate([[0.0], np.cumsum(rate) * dt])
    grid = np.concatenate([[times[0] - dt / 2], times + dt / 2])
    total = operational[-1]
    shape = 3.0
    events = []
    t = rng.uniform(0.0, 1.0) * rng.gamma(shape, mean_s / shape)  # start at a random phase of an interval
    while t < total:
        events.append(float(np.interp(t, operational, grid)))
        t += rng.gamma(shape, mean_s / shape)
    return events


def _blink_shape(t: np.ndarray, duration: float) -> np.ndarray:
    """Lid closure 0..1 for a blink starting at t = 0: fast closing (35 %), slower opening (65 %)."""
    close = 0.35 * duration
    out = np.zeros_like(t)
    closing = (t >= 0) & (t < close)
    opening = (t >= close) & (t < duration)
    out[closing] = 0.5 - 0.5 * np.cos(np.pi * t[closing] / close)
    out[opening] = 0.5 + 0.5 * np.cos(np.pi * (t[opening] - close) / (duration - close))
    return out


def motion_from_speech(samples: np.ndarray, sr: int, fps: float, rng: np.random.Generator, *,
                       style: MotionStyle = MotionStyle()) -> MotionClip:
    """SYNTHETIC facial motion (`arkit52` + head pose) driven by the speech in `samples` (see module doc).

    The clip has round(duration × fps) frames; frame i describes the time [i / fps, (i + 1) / fps).
    Deterministic for a given generator state of `rng`.
    """
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1 or samples.size == 0:
        raise ValueError(f"samples must be mono audio (1-D, non-empty), got shape {samples.shape}")
    if samples.size < 0.1 * sr:
        raise ValueError(f"the audio lasts {samples.size / sr:.3f} s; motion needs at least 0.1 s of speech")
    duration = len(samples) / sr
    n = frames_for_duration(duration, fps)
    t = (np.arange(n) + 0.5) / fps                      # frame centres
    feats = speech_features(samples, sr)
    lead = style.lead_ms / 1000.0

    def at(signal: np.ndarray, shift: float = 0.0) -> np.ndarray:
        return np.interp(t + shift, feats.times, signal)

    values = np.zeros((n, len(ARKIT52)))
    head = np.zeros((n, 6))

    # Lower face: the loudness envelope, smoothed as a jaw would, sampled `lead` ahead of the frame.
    openness = gaussian_filter1d(feats.openness, sigma=2.0)
    variation = 1.0 + 0.15 * _slow_noise(rng, len(feats.times), 100.0, 1.5)[:, 0]   # syllable-to-syllable
    jaw = at(np.clip(openness * variation, 0.0, 1.0) ** 1.7, lead)
    voiced = gaussian_filter1d(feats.voiced.astype(float), sigma=2.0)
    centroid_st = 12 * np.log2(np.maximum(feats.centroid, 50.0) / max(np.median(feats.centroid[feats.voiced])
                                                                        if feats.voiced.any() else 1500.0, 50.0))
    rounding = at(voiced / (1.0 + np.exp(2.0 * (centroid_st + 1.0))), lead)      # low centroid, voiced
    spreading = at(voiced / (1.0 + np.exp(-2.0 * (centroid_st - 1.0))), lead)    # high centroid, voiced
    activity = at(feats.activity, lead)
    pause = 1.0 - activity

    jaw_open = style.jaw_gain * (0.03 + 0.6 * jaw)
    values[:, _A["jawOpen"]] = jaw_open
    lower_down = style.lip_gain * (0.35 * jaw + 0.1 * spreading * jaw)
    values[:, _A["mouthLowerDownLeft"]] = lower_down * (1 + 0.5 * style.asymmetry)
    values[:, _A["mouthLowerDownRight"]] = lower_down * (1 - 0.5 * style.asymmetry)
    values[:, _A["mouthUpperUpLeft"]] = values[:, _A["mouthUpperUpRight"]] = style.lip_gain * 0.15 * spreading * jaw
    values[:, _A["mouthFunnel"]] = style.lip_gain * 0.45 * rounding * np.sqrt(jaw)
    values[:, _A["mouthPucker"]] = style.lip_gain * 0.4 * rounding * (1.0 - jaw)
    values[:, _A["mouthStretchLeft"]] = values[:, _A["mouthStretchRight"]] = style.lip_gain * 0.2 * spreading
    values[:, _A["mouthClose"]] = 0.03 + 0.2 * pause
    values[:, _A["mouthPressLeft"]] = values[:, _A["mouthPressRight"]] = 0.12 * pause
    values[:, _A["mouthRollLower"]] = 0.05 * pause

    # Brows and nods on pitch accents.
    emphatic = style.emotion == "emphatic"
    brow = np.zeros(n)
    nod = np.zeros(n)
    for accent_t, prominence in pitch_accents(feats):
        strength = min(prominence, 4.0)
        if rng.random() < (0.85 if emphatic else 0.7):
            delay = rng.uniform(-0.04, 0.10)
            amplitude = (0.16 + 0.07 * strength) * rng.lognormal(0.0, 0.25)
            brow += amplitude * _bump(t - (accent_t + delay - 0.15), 0.15)
        if rng.random() < 0.6:
            delay = rng.uniform(0.03, 0.15)
            amplitude = (1.2 + 0.5 * strength) * rng.lognormal(0.0, 0.3)
            nod += amplitude * _bump(t - (accent_t + delay - 0.2), 0.2)
    brow = style.brow_gain * brow + 0.04
    values[:, _A["browInnerUp"]] = brow
    values[:, _A["browOuterUpLeft"]] = 0.8 * brow * (1 + style.asymmetry)
    values[:, _A["browOuterUpRight"]] = 0.8 * brow * (1 - style.asymmetry)
    values[:, _A["browDownLeft"]] = values[:, _A["browDownRight"]] = 0.05 * (1 - activity)

    # Smile (happy), with the cheek raise and lid narrowing that go with it.
    smile = style.smile * (1.0 + 0.25 * _slow_noise(rng, n, fps, 0.3)[:, 0])
    if style.emotion == "happy":
        smile += 0.25 * np.clip(brow - 0.04, 0.0, None)
    smile = np.clip(smile, 0.0, None)
    values[:, _A["mouthSmileLeft"]] = smile * (1 + style.asymmetry)
    values[:, _A["mouthSmileRight"]] = smile * (1 - style.asymmetry)
    values[:, _A["cheekSquintLeft"]] = values[:, _A["cheekSquintRight"]] = 0.5 * smile
    values[:, _A["eyeSquintLeft"]] = values[:, _A["eyeSquintRight"]] = 0.2 * smile + 0.05

    # Gaze: fixations held for ~1.2 s, small saccades between them.
    gaze = np.zeros((n, 2))
    start = 0.0
    while start < duration:
        hold = rng.exponential(1.2) + 0.2
        gaze[(t >= start) & (t < start + hold)] = rng.normal(0.0, (0.15, 0.1))
        start += hold
    gaze = gaussian_filter1d(gaze, sigma=0.6, axis=0)
    right, up = gaze[:, 0], gaze[:, 1]
    values[:, _A["eyeLookOutLeft"]] = values[:, _A["eyeLookInRight"]] = np.clip(right, 0, None)
    values[:, _A["eyeLookInLeft"]] = values[:, _A["eyeLookOutRight"]] = np.clip(-right, 0, None)
    values[:, _A["eyeLookUpLeft"]] = values[:, _A["eyeLookUpRight"]] = np.clip(up, 0, None)
    values[:, _A["eyeLookDownLeft"]] = values[:, _A["eyeLookDownRight"]] = np.clip(-up, 0, None)

    # Blinks (the lids also follow the gaze down a little).
    lids = 0.05 + 0.3 * np.clip(-up, 0, None)
    blinks = np.zeros(n)
    for onset in _blink_times(rng, feats.times, feats.activity, style.blink_mean_s):
        duration_s = rng.uniform(0.15, 0.25)
        # Averaged over each frame's exposure: a blink shorter than a frame still shows.
        sub = t[:, None] + (np.arange(4)[None, :] - 1.5) / (4 * fps)
        blinks = np.maximum(blinks, rng.uniform(0.9, 1.0) * _blink_shape(sub - onset, duration_s).mean(axis=1))
    values[:, _A["eyeBlinkLeft"]] = lids + (1.0 - lids) * blinks
    values[:, _A["eyeBlinkRight"]] = lids + (1.0 - lids) * blinks * rng.uniform(0.95, 1.0)

    # Head: slow sway, a lean and nod with loudness, nods on accents (rx positive = nose down).
    sway = _slow_noise(rng, n, fps, 0.4, channels=6) * np.array([1.5, 2.5, 1.2, 4.0, 2.0, 3.0])
    loud = at(gaussian_filter1d(feats.openness, sigma=20))
    head += style.head_gain * sway
    head[:, 0] += style.head_gain * (nod + 1.0 * loud)
    head[:, 5] += style.head_gain * 3.0 * loud

    # Sensor-like noise.
    values += rng.normal(0.0, style.noise_std, values.shape)
    head += rng.normal(0.0, 1.0, head.shape) * np.array([0.15, 0.15, 0.15, 0.3, 0.3, 0.3])
    values = np.clip(values, 0.0, 1.0)
    metadata = {"source": "synthetic", "synthetic": True, "generator": "inference.synthetic",
                "generator_version": GENERATOR_VERSION, "emotion": style.emotion, "style": asdict(style),
                "units": "arkit52 weights 0..1; head pose degrees (rx, ry, rz) and mm (tx, ty, tz)"}
    return MotionClip(fps=fps, layout="arkit52", values=values.astype(np.float32),
                      head_pose=head.astype(np.float32), metadata=metadata)


# --- the corpus ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UtteranceSpec:
    """Everything that determines one utterance of the corpus (the manifest records it)."""

    index: int
    name: str
    transcript: str
    speaker: str
    emotion: str
    voice: str
    words_per_minute: int
    pitch: int
    fps: float
    seed: int


def corpus_plan(n_utterances: int, *, fps: float = 25, seed: int = 0) -> list[UtteranceSpec]:
    """The recipe of each utterance; utterance i's recipe does not depend on `n_utterances`, so a small
    corpus is the start of a larger one with the same seed. Speakers take turns; sentences are shuffled."""
    if not isinstance(n_utterances, int) or n_utterances < 1:
        raise SyntheticCorpusError(f"n_utterances must be a positive whole number, got {n_utterances!r}")
    if not fps > 0:
        raise SyntheticCorpusError(f"fps must be positive, got {fps!r}")
    order = np.random.default_rng([seed, 0x5E7]).permutation(len(SENTENCES))
    plan = []
    for i in range(n_utterances):
        rng = _utterance_rng(seed, i, purpose=1)
        sentence = SENTENCES[order[i % len(SENTENCES)]]
        speaker = SPEAKERS[i % len(SPEAKERS)]
        weights = (0.2, 0.35, 0.45) if sentence.endswith("!") else (0.55, 0.25, 0.2)
        emotion = EMOTIONS[int(rng.choice(len(EMOTIONS), p=weights))]
        pitch_offset, rate_offset = _EMOTION_VOICE[emotion]
        wpm = int(np.clip(speaker.wpm + rate_offset + rng.integers(-12, 13), 130, 190))
        pitch = int(np.clip(speaker.pitch + pitch_offset + rng.integers(-3, 4), 0, 99))
        plan.append(UtteranceSpec(i, f"syn{i:03d}", sentence, speaker.name, emotion, speaker.voice, wpm,
                                  pitch, float(fps), int(seed)))
    return plan


def _utterance_rng(seed: int, index: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index), int(purpose)])


def make_utterance(out_dir: str | os.PathLike, spec: UtteranceSpec, *, reuse_wav_sha256: str | None = None) -> dict:
    """Write `<name>.wav` and `<name>.npz` for one utterance; returns its manifest entry.

    When `<name>.wav` already exists with the SHA-256 `reuse_wav_sha256` (the same speech made before), it
    is kept as it is and only the motion is made.
    """
    out_dir = Path(out_dir)
    wav_path, npz_path = out_dir / f"{spec.name}.wav", out_dir / f"{spec.name}.npz"
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (reuse_wav_sha256 and wav_path.is_file() and audio.content_sha256(wav_path) == reuse_wav_sha256):
        speak(spec.transcript, wav_path, voice=spec.voice, words_per_minute=spec.words_per_minute, pitch=spec.pitch)
    samples = audio.decode(wav_path, sample_rate=audio.SAMPLE_RATE)
    style = SPEAKERS_BY_NAME[spec.speaker].style(spec.emotion)
    clip = motion_from_speech(samples, audio.SAMPLE_RATE, spec.fps, _utterance_rng(spec.seed, spec.index, 2),
                              style=style)
    clip = replace(clip, metadata={**clip.metadata, "seed": spec.seed, "speaker": spec.speaker,
                                   "utterance": spec.name, "transcript": spec.transcript})
    clip.save(npz_path)
    return {"spec": asdict(spec), "duration_s": len(samples) / audio.SAMPLE_RATE, "n_frames": clip.n_frames,
            "wav_sha256": audio.content_sha256(wav_path), "npz_sha256": audio.content_sha256(npz_path)}


def make_corpus(out_dir: str | os.PathLike, *, n_utterances: int = 96, fps: float = 25, seed: int = 0,
                progress=None, workers: int | None = None) -> list[dict]:
    """Make (or bring up to date) the SYNTHETIC corpus in `out_dir`; returns one row per utterance.

    Each row has name, speaker, emotion, transcript, synthetic (1), wav and motion paths, duration_s,
    n_frames and `made` (False when the files were already there and unchanged). `progress(done, total)`
    is called as utterances finish. Utterances are made by a few threads at once (`workers`).

    Files this function made earlier for utterances no longer in the corpus (a smaller `n_utterances`)
    are removed, so the folder holds exactly the corpus that metadata.csv lists; files changed by hand
    since are left alone.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = corpus_plan(n_utterances, fps=fps, seed=seed)
    manifest = _read_manifest(out_dir)
    entries: dict[str, dict] = {}
    todo: list[tuple[UtteranceSpec, str | None]] = []
    for spec in plan:
        entry = manifest.get(spec.name)
        if entry is not None and _up_to_date(out_dir, spec, entry):
            entries[spec.name] = {**entry, "made": False}
        else:
            same_speech = entry is not None and _speech_of(entry.get("spec", {})) == _speech_of(asdict(spec))
            todo.append((spec, entry.get("wav_sha256") if same_speech else None))
    total, done = len(plan), len(plan) - len(todo)
    if progress:
        progress(done, total)

    def make(job: tuple[UtteranceSpec, str | None]) -> dict:
        return make_utterance(out_dir, job[0], reuse_wav_sha256=job[1])

    # Most of an utterance's time is spent waiting for espeak-ng and ffmpeg, so threads overlap it well
    # (and, unlike forked processes, are safe inside a web server or a Celery worker).
    workers = workers if workers is not None else min(8, 2 * (os.cpu_count() or 1))
    if len(todo) >= 4 and workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            made = pool.map(make, todo)
            for entry in made:
                entries[entry["spec"]["name"]] = {**entry, "made": True}
                done += 1
                if progress:
                    progress(done, total)
    else:
        for job in todo:
            entries[job[0].name] = {**make(job), "made": True}
            done += 1
            if progress:
                progress(done, total)

    for name, entry in manifest.items():
        if name not in entries:
            _remove_if_unchanged(out_dir, name, entry)
    rows = []
    for spec in plan:
        entry = entries[spec.name]
        rows.append({"name": spec.name, "speaker": spec.speaker, "emotion": spec.emotion,
                     "transcript": spec.transcript, "synthetic": 1, "wav": out_dir / f"{spec.name}.wav",
                     "motion": out_dir / f"{spec.name}.npz", "duration_s": entry["duration_s"],
                     "n_frames": entry["n_frames"], "voice": spec.voice, "made": entry["made"]})
    _write_if_changed(out_dir / "metadata.csv", _metadata_csv(rows))
    kept = {name: {k: v for k, v in e.items() if k != "made"} for name, e in entries.items()}
    _write_if_changed(out_dir / MANIFEST_NAME, json.dumps(
        {"generator": "inference.synthetic", "generator_version": GENERATOR_VERSION, "synthetic": True,
         "utterances": dict(sorted(kept.items()))}, indent=1, sort_keys=True) + "\n")
    return rows


def _speech_of(spec: dict) -> tuple:
    """What the audio of an utterance depends on."""
    return tuple(spec.get(k) for k in ("transcript", "voice", "words_per_minute", "pitch"))


def _remove_if_unchanged(out_dir: Path, name: str, entry: dict) -> None:
    for suffix, key in ((".wav", "wav_sha256"), (".npz", "npz_sha256")):
        path = out_dir / f"{name}{suffix}"
        if path.is_file() and audio.content_sha256(path) == entry.get(key):
            path.unlink()


def _read_manifest(out_dir: Path) -> dict[str, dict]:
    try:
        data = json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if data.get("generator_version") != GENERATOR_VERSION or not isinstance(data.get("utterances"), dict):
        return {}
    return data["utterances"]


def _up_to_date(out_dir: Path, spec: UtteranceSpec, entry: dict) -> bool:
    if entry.get("spec") != asdict(spec):
        return False
    for suffix, key in ((".wav", "wav_sha256"), (".npz", "npz_sha256")):
        path = out_dir / f"{spec.name}{suffix}"
        if not path.is_file() or audio.content_sha256(path) != entry.get(key):
            return False
    return True


def _metadata_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(METADATA_COLUMNS)
    for row in rows:
        writer.writerow([row[c] for c in METADATA_COLUMNS])
    return buffer.getvalue()


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    with audio.atomic_output(path) as partial:
        partial.write_text(text, encoding="utf-8")


# --- the simulated robot face ------------------------------------------------------------------------------

ROBOT_CHANNELS: tuple[str, ...] = (
    "upper.brow_left", "upper.brow_right", "upper.eyelid_left", "upper.eyelid_right", "lower.jaw",
    "lower.lip_corner_left", "lower.lip_corner_right", "lower.upper_lip", "lower.lower_lip",
    "head.pan", "head.tilt",
)
# Commands at rest: brows down, lids normally open, mouth closed, lip corners and head centred.
ROBOT_REST = np.array([0.0, 0.0, 0.2, 0.2, 0.0, 0.5, 0.5, 0.0, 0.0, 0.5, 0.5])
ROBOTS = ("sim-face",)
TRACKER_NOISE_MM = 0.3


def _gamma(x: np.ndarray, g: float) -> np.ndarray:
    return np.clip(x, 0.0, 1.0) ** g


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def sim_face_pose(commands) -> tuple[np.ndarray, np.ndarray]:
    """ARKit weights [n, 52] and head pose [n, 6] that the SYNTHETIC `sim-face` servos produce.

    Each actuator drives one or a few blendshapes through a monotone, mildly nonlinear map (servo linkage
    gamma curves, a smoothstep lid), with some coupling (a brow servo also lifts the inner brow, the jaw
    drags the lower lip, the upper-lip servo wrinkles the nose). Lip-corner servos are centred at 0.5:
    below pulls the corner down (frown), above pulls it up and out (smile). Pan and tilt turn the head
    linearly over ±25° (yaw) and ±15° (pitch), as inference/robots.py's `sim-face` profile declares.
    """
    c = np.clip(np.atleast_2d(np.asarray(commands, dtype=np.float64)), 0.0, 1.0)
    if c.shape[1] != len(ROBOT_CHANNELS):
        raise ValueError(f"commands must be [n, {len(ROBOT_CHANNELS)}] ({', '.join(ROBOT_CHANNELS)}), got {c.shape}")
    col = {name: c[:, i] for i, name in enumerate(ROBOT_CHANNELS)}
    w = np.zeros((c.shape[0], len(ARKIT52)))
    brow_l, brow_r = _gamma(col["upper.brow_left"], 1.3), _gamma(col["upper.brow_right"], 1.3)
    w[:, _A["browOuterUpLeft"]], w[:, _A["browOuterUpRight"]] = 0.9 * brow_l, 0.9 * brow_r
    w[:, _A["browInnerUp"]] = 0.45 * (brow_l + brow_r)
    for side, name in (("Left", "upper.eyelid_left"), ("Right", "upper.eyelid_right")):
        lid = col[name]
        w[:, _A[f"eyeBlink{side}"]] = _smoothstep((lid - 0.2) / 0.8) ** 0.9
        w[:, _A[f"eyeWide{side}"]] = 0.6 * _gamma((0.2 - lid) / 0.2, 1.5)
    jaw = _gamma(col["lower.jaw"], 1.2)
    w[:, _A["jawOpen"]] = 0.85 * jaw
    lower = _gamma(col["lower.lower_lip"], 1.1)
    w[:, _A["mouthLowerDownLeft"]] = w[:, _A["mouthLowerDownRight"]] = np.clip(0.8 * lower + 0.15 * jaw, 0, 1)
    upper = _gamma(col["lower.upper_lip"], 1.5)
    w[:, _A["mouthUpperUpLeft"]] = w[:, _A["mouthUpperUpRight"]] = 0.9 * upper
    w[:, _A["noseSneerLeft"]] = w[:, _A["noseSneerRight"]] = 0.2 * upper
    for side, name in (("Left", "lower.lip_corner_left"), ("Right", "lower.lip_corner_right")):
        corner = col[name]
        w[:, _A[f"mouthSmile{side}"]] = _gamma(2 * corner - 1, 1.1)
        w[:, _A[f"mouthFrown{side}"]] = _gamma(1 - 2 * corner, 1.1)
        w[:, _A[f"cheekSquint{side}"]] = 0.3 * _gamma(2 * corner - 1, 2.0)
    head = np.zeros((c.shape[0], 6))
    head[:, 1] = 50.0 * (col["head.pan"] - 0.5)     # yaw, degrees (the neck servos are position-controlled)
    head[:, 0] = 30.0 * (col["head.tilt"] - 0.5)    # pitch, positive = nose down
    return w, head


def robot_landmarks(commands, *, robot: str = "sim-face", noise_mm: float = 0.0,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """Landmarks [n, 68, 3] (camera frame, mm) of the SYNTHETIC robot face under motor `commands` [n, 11],
    with Gaussian tracker noise of `noise_mm` per coordinate."""
    if robot not in ROBOTS:
        raise ValueError(f"unknown simulated robot {robot!r}; known: {', '.join(ROBOTS)}")
    weights, head = sim_face_pose(commands)
    points = apply_head_pose(arkit_to_ibug68(weights), head).astype(np.float64)
    if noise_mm > 0:
        rng = rng if rng is not None else np.random.default_rng(0)
        points += rng.normal(0.0, noise_mm, points.shape)
    return points.astype(np.float32)


def robot_pairs(n: int, *, robot: str = "sim-face", seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """SYNTHETIC calibration pairs for the robot inverse model: (commands [n, 11] in 0..1, landmarks
    [n, 68, 3] mm, channel names).

    Stands in for a real robot's calibration recordings (random commands sent to the motors, the face
    filmed and its landmarks tracked). Commands are uniform in 0..1, except that each actuator is at rest
    (with a little jitter) a quarter of the time, so near-neutral faces are well covered; landmarks carry
    the tracker noise of `TRACKER_NOISE_MM` (0.3 mm).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive whole number, got {n!r}")
    if robot not in ROBOTS:
        raise ValueError(f"unknown simulated robot {robot!r}; known: {', '.join(ROBOTS)}")
    rng = np.random.default_rng([int(seed), 0xB07])
    commands = rng.uniform(0.0, 1.0, (n, len(ROBOT_CHANNELS)))
    at_rest = rng.random(commands.shape) < 0.25
    rest = np.clip(ROBOT_REST + rng.normal(0.0, 0.03, commands.shape), 0.0, 1.0)
    commands = np.where(at_rest, rest, commands).astype(np.float32)
    landmarks = robot_landmarks(commands, robot=robot, noise_mm=TRACKER_NOISE_MM, rng=rng)
    return commands, landmarks, ROBOT_CHANNELS


__all__ = ["SENTENCES", "SPEAKERS", "EMOTIONS", "Speaker", "MotionStyle", "UtteranceSpec", "SyntheticCorpusError",
           "speak", "speech_features", "pitch_accents", "motion_from_speech", "corpus_plan", "make_utterance",
           "make_corpus", "ROBOT_CHANNELS", "ROBOT_REST", "sim_face_pose", "robot_landmarks", "robot_pairs"]
