"""Attention-check stimuli: a normal clip with an on-screen instruction such as "Please rate this video 4".

A participant who watches the clip gives the rating it asks for; one who does not is caught. We follow
the practice of the GENEA challenges' crowdsourced studies (Kucherenko et al., GENEA Challenge 2020,
IUI 2021; 2022, ACM TOG 2024; 2023, ICMI 2023), which, as we understand their reports, mixed such
instruction clips in among the rated stimuli and excluded participants who failed them. The exact rules
below are what this project's stimulus-production issue asks for, and partly the project's own choices
(marked as such); they are not quoted from those papers:

- the instruction starts at least 2 s into the clip, so a participant who rates without watching
  (or only glances at the first frame) misses it, and stays on screen for at least 5 s (until the end of
  the clip here), long enough to be read by anyone who is watching;
- the requested number N is chosen by `choose_attention_number` under a documented rule (see there) that
  keeps it off the answers careless participants give anyway and off numbers easily misheard;
- the text is large, white on a dark banner, in the lower third of the frame, like a subtitle.

Text is drawn with Pillow's bundled font, so no font files are needed.
"""
from __future__ import annotations

import functools
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ATTENTION_MIN_START_S = 2.0
ATTENTION_MIN_DURATION_S = 5.0

# Numbers whose spoken English forms are confused with another number (project choice, see
# choose_attention_number): the "-teen"/"-ty" pairs differ only in stress and a final consonant, and "five"
# and "nine" share their vowel (radiotelephony says "fife" and "niner" for this reason).
CONFUSABLE_NUMBERS = frozenset({13, 30, 14, 40, 15, 50, 16, 60, 17, 70, 18, 80, 19, 90, 5, 9})

BANNER_COLOUR = (12, 12, 16)
BANNER_OPACITY = 0.88
TEXT_COLOUR = (255, 255, 255)


def attention_instruction(n: int) -> str:
    """The instruction shown in an attention-check clip: "Please rate this video N"."""
    return f"Please rate this video {int(n)}"


def attention_numbers(scale_points: int | Sequence[int]) -> list[int]:
    """The numbers an attention check may ask for on a scale, by the rule of `choose_attention_number`."""
    values = sorted(set(range(1, scale_points + 1) if isinstance(scale_points, int) else (int(v) for v in scale_points)))
    if len(values) < 3:
        raise ValueError(
            f"an attention check needs a rating scale of at least 3 points, got {values}; "
            "a two-way choice cannot tell an attentive answer from a lucky one often enough"
        )
    inner = values[1:-1]
    middle = {values[(len(values) - 1) // 2]} if len(values) % 2 else set()
    for allowed in (
        [v for v in inner if v not in middle and v not in CONFUSABLE_NUMBERS],
        [v for v in inner if v not in middle],
        inner,
    ):
        if allowed:
            return allowed
    raise AssertionError("unreachable: a scale of three or more points has an inner value")


def choose_attention_number(rng: np.random.Generator | random.Random, scale_points: int | Sequence[int]) -> int:
    """Pick the rating an attention check asks for, uniformly from the allowed numbers of the scale.

    `rng` is a numpy Generator or a `random.Random`; the same seed gives the same number.
    `scale_points` is k for a 1..k scale (likert), or the scale's values (e.g. range(0, 101) for a slider).
    The rule (a project choice, made for these reasons):

    1. never an end of the scale: straight-lining and careless participants give extreme answers, so an
       end would let them pass by chance;
    2. never the midpoint of an odd-length scale: where a slider starts and where undecided participants
       land (an even-length scale has no single midpoint, and nothing is removed);
    3. never a number easily misheard when spoken, so the same number stays safe if the instruction is
       read out (CONFUSABLE_NUMBERS: 13–19 and 30, 40, …, 90, whose "-teen"/"-ty" forms are confused,
       and 5 and 9).

    If the rules leave nothing on a very short scale, rule 3 and then rule 2 are relaxed (a 1–3 scale asks
    for 2); the ends are always avoided. On a 1–5 scale this leaves {2, 4}, on 1–7 {2, 3, 6}, on 1–10
    {2, 3, 4, 6, 7, 8}.
    """
    allowed = attention_numbers(scale_points)
    index = rng.integers(len(allowed)) if isinstance(rng, np.random.Generator) else rng.randrange(len(allowed))
    return int(allowed[int(index)])


def attention_check(seed: int, scale_points: int | Sequence[int]) -> tuple[str, dict]:
    """The instruction text of one attention check and its recipe (seed, number, expected answer)."""
    number = choose_attention_number(np.random.default_rng(seed), scale_points)
    recipe = {
        "recipe": "attention_check",
        "seed": int(seed),
        "number": number,
        "text": attention_instruction(number),
        "expected_answer": {"rating": number},
        "start_s": ATTENTION_MIN_START_S,
        "min_duration_s": ATTENTION_MIN_DURATION_S,
    }
    return recipe["text"], recipe


def overlay_instruction(
    frames: Iterable[np.ndarray],
    fps: float | Fraction,
    text: str,
    *,
    start_s: float = ATTENTION_MIN_START_S,
    min_duration_s: float = ATTENTION_MIN_DURATION_S,
    n_frames: int | None = None,
) -> Iterator[np.ndarray]:
    """The frames with `text` drawn on a banner from `start_s` to the end of the clip, streamed.

    The text shows on frame i when i / fps >= start_s. The clip must last at least start_s + min_duration_s
    so that the text is on screen for min_duration_s; a shorter clip is refused, saying how long it must
    be — up front when its length is known (`n_frames`, or `len(frames)`), else when the frames run out
    (the encoder then leaves no file). `start_s` below 2 s and `min_duration_s` below 5 s are refused.
    """
    if not text.strip():
        raise ValueError("the instruction text is empty")
    if not start_s >= ATTENTION_MIN_START_S:
        raise ValueError(f"the instruction must start at least {ATTENTION_MIN_START_S:g} s into the clip, got {start_s!r} s")
    if not min_duration_s >= ATTENTION_MIN_DURATION_S:
        raise ValueError(f"the instruction must show for at least {ATTENTION_MIN_DURATION_S:g} s, got {min_duration_s!r} s")
    rate = float(fps)
    if not rate > 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    first = math.ceil(start_s * rate - 1e-9)
    needed = math.ceil((start_s + min_duration_s) * rate - 1e-9)
    if n_frames is None and hasattr(frames, "__len__"):
        n_frames = len(frames)
    if n_frames is not None and n_frames < needed:
        raise ValueError(_too_short(n_frames, needed, rate, start_s, min_duration_s))
    return _overlaid(iter(frames), text, first, needed, rate, start_s, min_duration_s)


def _overlaid(frames: Iterator[np.ndarray], text: str, first: int, needed: int, rate: float, start_s: float,
              min_duration_s: float) -> Iterator[np.ndarray]:
    count = 0
    for count, frame in enumerate(frames, start=1):
        yield draw_instruction(frame, text) if count - 1 >= first else frame
    if count < needed:
        raise ValueError(_too_short(count, needed, rate, start_s, min_duration_s))


def _too_short(n_frames: int, needed: int, rate: float, start_s: float, min_duration_s: float) -> str:
    return (
        f"the clip lasts {n_frames / rate:.2f} s ({n_frames} frames) but an attention check shows its instruction "
        f"from {start_s:g} s for at least {min_duration_s:g} s, so it must last at least "
        f"{start_s + min_duration_s:g} s ({needed} frames at {rate:g} fps); use a longer utterance"
    )


def draw_instruction(frame: np.ndarray, text: str) -> np.ndarray:
    """A copy of one H×W×3 uint8 frame with `text` large, white on a dark banner across its lower third."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame has shape {frame.shape} and dtype {frame.dtype}; expected H×W×3 uint8 RGB")
    height, width = frame.shape[:2]
    colour, alpha = _banner(text, width, height)
    blended = frame.astype(np.float32) * (1.0 - alpha) + colour * alpha
    return np.rint(blended).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _banner(text: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The banner with its text as colour [H, W, 3] and opacity [H, W, 1], drawn once per text and size."""
    top, bottom = round(0.70 * height), round(0.95 * height)
    margin = 0.05 * width
    colour = Image.new("RGB", (width, height), BANNER_COLOUR)
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).rectangle((0, top, width, bottom), fill=round(255 * BANNER_OPACITY))
    font, lines = _fit_text(text, width - 2 * margin, 0.8 * (bottom - top))
    draw = ImageDraw.Draw(colour)
    spacing = round(0.15 * font.size)
    middle = ((width / 2), (top + bottom) / 2)
    draw.multiline_text(middle, "\n".join(lines), font=font, fill=TEXT_COLOUR, anchor="mm", align="center",
                        spacing=spacing)
    ImageDraw.Draw(mask).multiline_text(middle, "\n".join(lines), font=font, fill=255, anchor="mm",
                                        align="center", spacing=spacing)
    return (np.asarray(colour, dtype=np.float32),
            (np.asarray(mask, dtype=np.float32) / 255.0)[:, :, None])


def _fit_text(text: str, max_width: float, max_height: float) -> tuple[ImageFont.FreeTypeFont, list[str]]:
    """The largest font (and line breaks) with which `text` fits the box, on at most two lines if it can."""
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    size = max(8, int(max_height))
    while True:
        current = font(size)
        for lines in _line_breaks(text):
            box = probe.multiline_textbbox((0, 0), "\n".join(lines), font=current, spacing=round(0.15 * size))
            if box[2] - box[0] <= max_width and box[3] - box[1] <= max_height:
                return current, lines
        if size <= 8:
            return current, _line_breaks(text)[-1]
        size = max(8, int(size * 0.92))


def _line_breaks(text: str) -> list[list[str]]:
    """One line, then the two-line split with the most even halves."""
    words = text.split()
    if len(words) < 2:
        return [[text]]
    splits = sorted(range(1, len(words)), key=lambda i: abs(len(" ".join(words[:i])) - len(" ".join(words[i:]))))
    return [[text], [" ".join(words[:splits[0]]), " ".join(words[splits[0]:])]]


@functools.lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled scalable font at `size` pixels: no font files needed."""
    return ImageFont.load_default(size=size)
