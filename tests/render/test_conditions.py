"""Tests for render.conditions: every recipe records its choices and rebuilds bit for bit; random alignment
prefers the same speaker, is seeded and never picks the target; catch trials refuse small shifts; and a
clip that does not fit its audio (too short, NaN, unknown layout) gets a clear error.

Pure numpy: no files, no ffmpeg.
"""

import json

import numpy as np
import pytest

from inference import motion
from inference.motion import MotionClip, MotionError
from render import conditions
from render.conditions import (
    catch_trial,
    check_against_audio,
    clip_fingerprint,
    ground_truth,
    random_alignment,
    rebuild,
    still,
    time_shift,
)

FPS = 25


def clip_of(n_frames, seed, *, fps=FPS, layout="arkit52", channels=52):
    rng = np.random.default_rng(seed)
    return MotionClip(fps=fps, layout=layout, values=rng.uniform(0, 1, (n_frames, channels)).astype(np.float32),
                      head_pose=rng.normal(0, 3, (n_frames, 6)).astype(np.float32), metadata={"utterance": f"u{seed}"})


def same(a, b):
    return (np.array_equal(a.values, b.values) and np.array_equal(a.head_pose, b.head_pose)
            and a.fps == b.fps and a.layout == b.layout)


@pytest.fixture
def donors():
    # Speaker "s1" has the target and two other utterances; "s2" has three.
    return {
        "s1_target": ("s1", clip_of(100, 0)),
        "s1_long": ("s1", clip_of(300, 1)),
        "s1_short": ("s1", clip_of(40, 2)),
        "s2_a": ("s2", clip_of(200, 3)),
        "s2_b": ("s2", clip_of(150, 4)),
        "s2_c": ("s2", clip_of(120, 5)),
    }


# --- every recipe records its choices and rebuilds ---------------------------------------------------------


def test_ground_truth_is_the_clip_itself_and_rebuilds():
    clip = clip_of(50, 7)

    out, recipe = ground_truth(clip)

    assert out is clip
    assert recipe == {"recipe": "ground_truth", "source_fingerprint": clip_fingerprint(clip)}
    assert same(rebuild(recipe, clip=clip), clip)


def test_time_shift_records_the_shift_in_ms_and_frames_and_rebuilds():
    clip = clip_of(50, 7)

    shifted, recipe = time_shift(clip, 200)

    assert recipe["recipe"] == "time_shift"
    assert (recipe["shift_ms"], recipe["shift_frames"]) == (200.0, 5)
    np.testing.assert_array_equal(shifted.values[5:], clip.values[:-5])  # motion 5 frames late
    np.testing.assert_array_equal(shifted.values[:5], np.repeat(clip.values[:1], 5, axis=0))  # edge held
    assert same(rebuild(json.loads(json.dumps(recipe)), clip=clip), shifted)


def test_still_is_neutral_with_a_still_head_and_records_its_neutral_frame():
    clip = clip_of(30, 8)

    quiet, recipe = still(clip)

    assert quiet.n_frames == 30
    assert np.all(quiet.values == 0) and np.all(quiet.head_pose == 0)
    assert recipe["neutral"] == "zeros" and recipe["neutral_values"] == [0.0] * 52
    assert same(rebuild(json.loads(json.dumps(recipe)), clip=clip), quiet)


def test_still_of_landmarks_holds_the_median_face_not_the_origin():
    rng = np.random.default_rng(1)
    face = rng.normal(0, 50, 68 * 3).astype(np.float32)
    values = face + rng.normal(0, 1, (40, 68 * 3)).astype(np.float32)
    clip = MotionClip(fps=FPS, layout="landmarks:ibug68", values=values)

    quiet, recipe = still(clip)

    assert recipe["neutral"] == "median"
    np.testing.assert_allclose(quiet.values[0], np.median(values, axis=0))
    assert np.all(quiet.values == quiet.values[0])
    np.testing.assert_array_equal(rebuild(recipe, clip=clip).values, quiet.values)


def test_random_alignment_records_every_choice_and_rebuilds_bit_for_bit(donors):
    out, recipe = random_alignment("s1_target", "s1", 100, donors, seed=11)

    assert json.loads(json.dumps(recipe)) == recipe  # plain JSON, storable beside the stimulus
    assert set(recipe) >= {"donor", "donor_speaker", "start_frame", "mode", "seed", "n_frames", "donor_fingerprint"}
    donor = donors[recipe["donor"]][1]
    expected = motion.fit_length(donor, 100, start=recipe["start_frame"], mode=recipe["mode"])
    assert same(out, expected)
    assert out.n_frames == 100
    assert same(rebuild(json.loads(json.dumps(recipe)), donors=donors), out)


def test_rebuilding_from_changed_motion_is_refused(donors):
    _, recipe = random_alignment("s1_target", "s1", 100, donors, seed=11)
    changed = dict(donors)
    speaker, clip = donors[recipe["donor"]]
    changed[recipe["donor"]] = (speaker, clip.with_values(clip.values * 0.5))

    with pytest.raises(MotionError, match="not the one the recipe was made from"):
        rebuild(recipe, donors=changed)
    with pytest.raises(MotionError, match="pass it in donors"):
        rebuild(recipe, donors={})
    _, own = time_shift(clip_of(50, 1), 80)
    with pytest.raises(MotionError, match="not the one the recipe was made from"):
        rebuild(own, clip=clip_of(50, 2))


# --- random alignment's choices -----------------------------------------------------------------------------


def test_random_alignment_prefers_the_same_speaker_and_never_picks_the_target(donors):
    chosen = {random_alignment("s1_target", "s1", 100, donors, seed=seed)[1]["donor"] for seed in range(60)}

    assert chosen == {"s1_long", "s1_short"}


def test_random_alignment_falls_back_to_other_speakers_and_says_so(donors):
    only_others = {name: value for name, value in donors.items() if value[0] == "s2" or name == "s1_target"}

    picks = [random_alignment("s1_target", "s1", 100, only_others, seed=seed)[1] for seed in range(30)]

    assert {p["donor"] for p in picks} == {"s2_a", "s2_b", "s2_c"}
    assert not any(p["same_speaker"] for p in picks)
    assert random_alignment("s1_target", "s1", 100, donors, seed=0)[1]["same_speaker"] is True


def test_random_alignment_is_seeded_and_independent_of_dict_order(donors):
    first = random_alignment("s1_target", "s1", 100, donors, seed=5)
    again = random_alignment("s1_target", "s1", 100, dict(reversed(list(donors.items()))), seed=5)
    recipes = {json.dumps(random_alignment("s2_a", "s2", 80, donors, seed=s)[1], sort_keys=True) for s in range(10)}

    assert first[1] == again[1] and same(first[0], again[0])
    assert len(recipes) > 3  # different seeds make different choices


def test_a_long_donor_is_cut_without_a_seam_and_a_short_one_mirror_looped(donors):
    long_only = {"t": ("s1", clip_of(10, 0)), "long": ("s1", donors["s1_long"][1])}
    short_only = {"t": ("s1", clip_of(10, 0)), "short": ("s1", donors["s1_short"][1])}

    cut, cut_recipe = random_alignment("t", "s1", 100, long_only, seed=3)
    looped, loop_recipe = random_alignment("t", "s1", 100, short_only, seed=3)

    start = cut_recipe["start_frame"]
    assert not cut_recipe["extended"] and 0 <= start <= 300 - 100
    np.testing.assert_array_equal(cut.values, donors["s1_long"][1].values[start:start + 100])
    assert loop_recipe["extended"] and loop_recipe["mode"] == "mirror"
    assert same(looped, motion.fit_length(donors["s1_short"][1], 100, start=loop_recipe["start_frame"], mode="mirror"))


def test_random_alignment_without_another_utterance_is_an_error(donors):
    with pytest.raises(MotionError, match="only the target itself"):
        random_alignment("s1_target", "s1", 100, {"s1_target": donors["s1_target"]}, seed=0)
    with pytest.raises(MotionError, match="no utterances"):
        random_alignment("s1_target", "s1", 100, {}, seed=0)


def test_random_alignment_refuses_donors_at_another_frame_rate(donors):
    mixed = {**donors, "s1_30fps": ("s1", clip_of(90, 9, fps=30))}

    with pytest.raises(MotionError, match=r"s1_30fps \(30 fps\); resample them"):
        random_alignment("s1_target", "s1", 100, mixed, seed=0, fps=25)


# --- catch trials ------------------------------------------------------------------------------------------


def test_catch_trial_shifts_by_at_least_400_ms_and_knows_the_answer():
    clip = clip_of(100, 3)

    shifted, recipe = catch_trial(clip)

    # 500 ms is 12.5 frames at 25 fps; rounded as inference.motion.time_shift rounds, 12 frames = 480 ms.
    assert (recipe["requested_ms"], recipe["shift_frames"], recipe["shift_ms"]) == (500.0, 12, 480.0)
    np.testing.assert_array_equal(shifted.values[12:], clip.values[:-12])
    assert recipe["expected_answer"] == {"mismatch": True}
    assert same(rebuild(json.loads(json.dumps(recipe)), clip=clip), shifted)
    assert catch_trial(clip, -400)[1]["shift_frames"] == -10


@pytest.mark.parametrize("ms", [399, 250, -300, 0, float("nan")])
def test_catch_trial_refuses_shifts_under_400_ms(ms):
    with pytest.raises(MotionError, match="at least 400 ms"):
        catch_trial(clip_of(100, 3), ms)


def test_rounding_to_whole_frames_never_takes_a_catch_trial_under_400_ms():
    clip = clip_of(30, 3, fps=3)  # 400 ms is 1.2 frames at 3 fps; one frame would be only 333 ms

    _, recipe = catch_trial(clip, 400)

    assert recipe["shift_frames"] == 2 and recipe["shift_ms"] >= 400


def test_catch_trial_on_a_clip_shorter_than_the_shift_is_refused():
    with pytest.raises(MotionError, match="too short for a 500 ms shift"):
        catch_trial(clip_of(10, 3), 500)


# --- the check against the audio --------------------------------------------------------------------------


def test_a_clip_as_long_as_the_audio_within_a_frame_passes():
    clip = clip_of(100, 1)  # 4.000 s

    assert check_against_audio(clip, 4.0) is clip
    assert check_against_audio(clip, 4.03) is clip


def test_a_clip_shorter_than_the_audio_says_by_how_much_and_how_to_fix_it():
    with pytest.raises(MotionError) as caught:
        check_against_audio(clip_of(88, 1), 4.0)  # 3.52 s of motion for 4 s of speech

    message = str(caught.value)
    assert "the motion is 0.480 s (12.0 frames) shorter than the audio" in message
    assert "loop it to 100 frames with inference.motion.fit_length" in message
    assert "condition recipe" in message


def test_a_clip_longer_than_the_audio_is_refused_too():
    with pytest.raises(MotionError, match=r"0\.400 s \(10\.0 frames\) longer than the audio.*cut it to 100 frames"):
        check_against_audio(clip_of(110, 1), 4.0)


def test_nan_motion_is_refused_even_when_written_after_the_clip_was_made():
    values = np.zeros((10, 52), np.float32)
    values[3, 7] = np.nan
    with pytest.raises(MotionError, match=r"NaN/inf values \(first at frame 3, column 7\)"):
        MotionClip(fps=FPS, layout="arkit52", values=values)

    clip = clip_of(25, 1)
    clip.values[4, 2] = np.nan  # numpy arrays stay writable inside the frozen clip
    with pytest.raises(MotionError, match=r"first at frame 4, column 2"):
        check_against_audio(clip, 1.0)


def test_an_unknown_layout_reaches_the_caller_with_the_known_ones():
    with pytest.raises(MotionError, match="unknown motion layout 'blendshapes99'; known layouts: arkit52"):
        MotionClip(fps=FPS, layout="blendshapes99", values=np.zeros((5, 3)))
    with pytest.raises(MotionError, match="no retargeting from 'arkit52' to 'openface_au'; known mappings"):
        check_against_audio(clip_of(25, 1), 1.0, layout="openface_au")


def test_check_against_audio_converts_to_the_rigs_layout():
    clip = MotionClip(fps=FPS, layout="openface_au", values=np.full((25, 17), 2.5, np.float32))

    ready = check_against_audio(clip, 1.0, layout="arkit52")

    assert ready.layout == "arkit52" and ready.n_frames == 25
    assert ready.values[0, ready.channels.index("jawOpen")] == pytest.approx(0.5)


def test_model_and_uploaded_conditions_are_documented_as_made_elsewhere():
    assert "model(name)" in conditions.__doc__ and "uploaded" in conditions.__doc__
