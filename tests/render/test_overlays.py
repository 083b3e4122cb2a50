"""Tests for render.overlays: the attention-check number rule, and the instruction drawn only from 2 s on,
for at least 5 s, on clips long enough to hold it.

Frames are small solid-colour arrays, so the banner's pixels are easy to tell apart; one test encodes a
whole attention-check clip through the real encoder.
"""

import random

import numpy as np
import pytest

from render.checks import check_stimulus
from render.encode import encode_stimulus
from render.overlays import (
    CONFUSABLE_NUMBERS,
    attention_check,
    attention_instruction,
    attention_numbers,
    choose_attention_number,
    draw_instruction,
    overlay_instruction,
)
from render.placeholder import draw_face, speak

GREY = 150
W, H = 160, 120


def frames_of(n):
    return [np.full((H, W, 3), GREY, dtype=np.uint8) for _ in range(n)]


def has_banner(frame):
    lower = frame[int(0.72 * H):int(0.93 * H)]
    return bool((lower < 40).mean() > 0.3 and (lower > 200).any())  # dark banner with white text


# --- the number ---------------------------------------------------------------------------------------


def test_instruction_text():
    assert attention_instruction(4) == "Please rate this video 4"


@pytest.mark.parametrize("scale, allowed", [
    (5, [2, 4]),
    (7, [2, 3, 6]),
    (10, [2, 3, 4, 6, 7, 8]),
    (3, [2]),  # the midpoint is allowed only when nothing else is left; the ends never
])
def test_allowed_numbers_avoid_the_ends_the_midpoint_and_confusable_numbers(scale, allowed):
    assert attention_numbers(scale) == allowed


def test_a_slider_never_asks_for_teens_tens_ends_or_its_start():
    allowed = attention_numbers(range(0, 101))

    assert not {0, 100, 50} & set(allowed)
    assert not CONFUSABLE_NUMBERS & set(allowed)
    assert {13, 30, 14, 40, 19, 90}.isdisjoint(allowed) and {2, 23, 35, 64, 99} <= set(allowed)


def test_choice_is_seeded_and_covers_the_allowed_numbers():
    picks = [choose_attention_number(np.random.default_rng(seed), 7) for seed in range(200)]

    assert set(picks) == {2, 3, 6}
    assert picks == [choose_attention_number(np.random.default_rng(seed), 7) for seed in range(200)]
    text, recipe = attention_check(42, 5)
    assert text == f"Please rate this video {recipe['number']}"
    assert recipe["expected_answer"] == {"rating": recipe["number"]} and recipe["number"] in (2, 4)
    assert attention_check(42, 5) == (text, recipe)
    assert choose_attention_number(random.Random(9), 7) == choose_attention_number(random.Random(9), 7) in (2, 3, 6)


def test_two_point_scales_cannot_carry_an_attention_check():
    with pytest.raises(ValueError, match="at least 3 points"):
        attention_numbers(2)


# --- the overlay --------------------------------------------------------------------------------------


def test_instruction_shows_from_2_s_to_the_end_and_nowhere_else():
    fps = 25
    out = list(overlay_instruction(frames_of(200), fps, "Please rate this video 4"))  # 8 s

    assert len(out) == 200
    for i in range(50):  # before 2 s: untouched
        assert np.all(out[i] == GREY), i
    for i in range(50, 200):  # from 2 s on: the banner, with the upper part of the picture untouched
        assert has_banner(out[i]), i
        assert np.all(out[i][: int(0.65 * H)] == GREY), i


def test_window_at_a_non_integer_rate_starts_on_the_first_frame_at_or_after_2_s():
    fps = 29.97  # frame 59 is at 1.969 s, frame 60 at 2.002 s
    out = list(overlay_instruction(frames_of(240), fps, "Please rate this video 6"))

    assert not has_banner(out[59]) and has_banner(out[60])


def test_a_later_start_is_honoured():
    out = list(overlay_instruction(frames_of(250), 25, "Please rate this video 2", start_s=3.0))

    assert not has_banner(out[74]) and has_banner(out[75])


def test_a_clip_too_short_is_refused_up_front_saying_how_long_it_must_be():
    with pytest.raises(ValueError, match=r"lasts 6\.00 s \(150 frames\).*at least 7 s \(175 frames at 25 fps\)"):
        overlay_instruction(frames_of(150), 25, "Please rate this video 2")


def test_a_streamed_clip_too_short_fails_when_it_runs_out():
    stream = overlay_instruction(iter(frames_of(100)), 25, "Please rate this video 2")

    with pytest.raises(ValueError, match="must last at least 7 s"):
        list(stream)


def test_instructions_that_start_too_early_or_show_too_briefly_are_refused():
    with pytest.raises(ValueError, match="at least 2 s into the clip"):
        overlay_instruction(frames_of(300), 25, "Please rate this video 2", start_s=1.0)
    with pytest.raises(ValueError, match="at least 5 s"):
        overlay_instruction(frames_of(300), 25, "Please rate this video 2", min_duration_s=3.0)


def test_drawn_text_is_large_and_high_contrast():
    face = draw_face(0.3, width=240, height=240)
    marked = draw_instruction(face, "Please rate this video 8")

    banner = marked[int(0.70 * 240):int(0.95 * 240)]
    white = np.all(banner > 235, axis=-1)
    rows = np.flatnonzero(white.any(axis=1))
    assert rows.max() - rows.min() > 0.12 * 240  # the lettering is tall
    assert white.mean() > 0.05  # and bold enough to cover a good share of the banner
    assert np.median(banner) < 50  # on a dark ground
    np.testing.assert_array_equal(marked[: int(0.70 * 240)], face[: int(0.70 * 240)])


def test_an_attention_check_clip_encodes_and_passes_the_checks(tmp_path):
    speech = speak("This is a short sentence for an attention check, it goes on for a while longer.",
                   tmp_path / "speech.wav")
    text, recipe = attention_check(3, 5)
    n = 7 * 25 + 5  # 7.2 s
    frames = overlay_instruction((draw_face(0.2, width=W, height=H) for _ in range(n)), 25, text, n_frames=n)

    facts = encode_stimulus(frames, speech, tmp_path / "check.mp4", fps=25, width=W, height=H)

    assert facts.duration_s == pytest.approx(7.2)
    assert check_stimulus(tmp_path / "check.mp4") == facts
