"""Tests for render.placeholder: speech, the jaw signal and its alignments, the drawn face, and encoding.

Real espeak-ng and ffmpeg; clips are small (96×96, about a second) so the whole file runs in seconds.
"""

import math
from fractions import Fraction
import subprocess
import wave

import numpy as np
import pytest

import render.placeholder as placeholder
from render.checks import StimulusCheckError, check_stimulus
from render.placeholder import (
    ExternalToolError,
    draw_face,
    encode_stimulus,
    fit_to_length,
    jaw_envelope,
    make_placeholder_stimulus,
    speak,
    time_shift,
)

SIZE = 96


def write_wav(path, samples, sample_rate=16_000):
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return path


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return speak("Hello there, friend.", tmp_path_factory.mktemp("speech") / "hello.wav")


def files_in(directory):
    return sorted(p.name for p in directory.iterdir())


# --- speech ----------------------------------------------------------------------------------------


def test_speak_writes_16khz_mono_pcm_wav(speech):
    with wave.open(str(speech)) as audio:
        assert (audio.getframerate(), audio.getnchannels(), audio.getsampwidth()) == (16_000, 1, 2)
        assert 0.5 < audio.getnframes() / 16_000 < 3.0
    assert files_in(speech.parent) == ["hello.wav"]  # no temporary files left beside it


def test_speak_with_unknown_voice_names_espeak_and_leaves_nothing(tmp_path):
    with pytest.raises(ExternalToolError, match="espeak-ng could not speak with voice 'xx-nonexistent'") as caught:
        speak("Hello", tmp_path / "x.wav", voice="xx-nonexistent")
    assert caught.value.tool == "espeak-ng"
    assert files_in(tmp_path) == []


def test_speak_without_espeak_installed_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(placeholder.shutil, "which", lambda name: None)
    with pytest.raises(ExternalToolError, match="espeak-ng is not installed; install the Debian package espeak-ng"):
        speak("Hello", tmp_path / "x.wav")


def test_speak_refuses_empty_text(tmp_path):
    with pytest.raises(ValueError, match="needs some text"):
        speak("   ", tmp_path / "x.wav")


# --- jaw envelope ----------------------------------------------------------------------------------


def test_jaw_envelope_of_silence_is_zero_with_one_value_per_frame(tmp_path):
    silence = write_wav(tmp_path / "silence.wav", np.zeros(16_160))  # 1.01 s → 26 frames at 25 fps

    envelope = jaw_envelope(silence, 25)

    assert envelope.dtype == np.float32
    assert envelope.shape == (26,)
    assert np.all(envelope == 0.0)


def test_jaw_envelope_follows_a_tone_switched_on_and_off(tmp_path):
    # 0.4 s silence, 0.4 s tone, 0.4 s silence: 10 frames each at 25 fps; 250 Hz fits whole cycles in a frame.
    t = np.arange(6_400) / 16_000
    tone = 0.5 * np.sin(2 * np.pi * 250 * t)
    wav = write_wav(tmp_path / "burst.wav", np.concatenate([np.zeros(6_400), tone, np.zeros(6_400)]))

    envelope = jaw_envelope(wav, 25)

    assert envelope.shape == (30,)
    assert np.all(envelope[:9] == 0) and np.all(envelope[21:] == 0)
    np.testing.assert_allclose(envelope[11:19], 1.0, atol=1e-3)
    # One frame of smoothing at each edge: a quarter of the tone's level leaks into the silent neighbour.
    assert envelope[9] == pytest.approx(0.25, abs=0.01)
    assert envelope[10] == pytest.approx(0.75, abs=0.01)


def test_jaw_envelope_of_speech_has_clear_peaks_and_closes_in_pauses(speech):
    envelope = jaw_envelope(speech, 25)
    with wave.open(str(speech)) as audio:
        expected_frames = math.ceil(audio.getnframes() / audio.getframerate() * 25)

    assert envelope.shape == (expected_frames,)
    assert envelope.min() >= 0.0 and envelope.max() == pytest.approx(1.0)
    assert np.mean(envelope > 0.5) > 0.2  # the mouth opens wide often
    assert np.mean(envelope < 0.2) > 0.1  # and closes between syllables and at the end
    assert envelope[-1] < 0.05


def test_jaw_envelope_reads_other_audio_formats_through_ffmpeg(tmp_path, speech):
    other_format = tmp_path / "speech24.flac"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-nostdin", "-i", str(speech), "-sample_fmt", "s32",
                    str(other_format)], check=True)

    np.testing.assert_allclose(jaw_envelope(other_format, 25), jaw_envelope(speech, 25), atol=1e-3)


# --- alignment -------------------------------------------------------------------------------------


def test_fit_to_length_loops_and_cuts():
    signal = np.array([0.0, 0.1, 0.2, 0.3, 0.4])

    np.testing.assert_array_equal(fit_to_length(signal, 12), [0, 0.1, 0.2, 0.3, 0.4, 0, 0.1, 0.2, 0.3, 0.4, 0, 0.1])
    np.testing.assert_array_equal(fit_to_length(signal, 3), [0, 0.1, 0.2])
    np.testing.assert_array_equal(fit_to_length(signal, 4, start=3), [0.3, 0.4, 0, 0.1])
    assert fit_to_length(signal, 0).shape == (0,)


def test_fit_to_length_keeps_channels_and_refuses_empty_signals():
    motion = np.arange(6).reshape(3, 2)

    np.testing.assert_array_equal(fit_to_length(motion, 4), [[0, 1], [2, 3], [4, 5], [0, 1]])
    with pytest.raises(ValueError, match="empty"):
        fit_to_length(np.zeros(0), 5)


def test_time_shift_delays_or_advances_with_edge_padding():
    signal = np.array([1, 2, 3, 4, 5])

    np.testing.assert_array_equal(time_shift(signal, 2), [1, 1, 1, 2, 3])
    np.testing.assert_array_equal(time_shift(signal, -2), [3, 4, 5, 5, 5])
    np.testing.assert_array_equal(time_shift(signal, 0), signal)
    np.testing.assert_array_equal(time_shift(signal, 9), [1, 1, 1, 1, 1])


# --- drawing ---------------------------------------------------------------------------------------


def dark_pixels(frame, rows, cols, threshold=90):
    region = frame[rows, cols].astype(float)
    luminance = region @ [0.299, 0.587, 0.114]
    return int(np.sum(luminance < threshold))


MOUTH = (slice(int(0.55 * 240), int(0.75 * 240)), slice(int(0.35 * 240), int(0.65 * 240)))
LEFT_EYE = (slice(int(0.34 * 240), int(0.44 * 240)), slice(int(0.33 * 240), int(0.46 * 240)))
CAPTION_BAND = (slice(int(0.79 * 240), int(0.96 * 240)), slice(0, 240))


def test_draw_face_returns_an_rgb_frame_and_is_deterministic():
    frame = draw_face(0.5, width=240, height=160)

    assert frame.shape == (160, 240, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame, draw_face(0.5, width=240, height=160))


def test_mouth_opening_grows_with_jaw():
    counts = [dark_pixels(draw_face(jaw, width=240, height=240), *MOUTH) for jaw in (0.0, 0.25, 0.5, 0.75, 1.0)]

    assert all(later > earlier for earlier, later in zip(counts, counts[1:])), counts
    assert counts[-1] > 10 * max(counts[0], 1)


def test_blink_covers_the_eyes():
    def white(frame):
        region = frame[LEFT_EYE]
        return int(np.sum(np.all(region > 240, axis=-1)))

    open_eye = white(draw_face(0, width=240, height=240))
    half = white(draw_face(0, width=240, height=240, blink=0.5))
    shut = white(draw_face(0, width=240, height=240, blink=1.0))

    assert open_eye > half > shut == 0


def test_raised_brows_sit_higher():
    def brow_row(frame):
        brow_pixels = np.all(np.abs(frame.astype(int) - placeholder.BROW_COLOUR) < 12, axis=-1)
        rows, _ = np.nonzero(brow_pixels[: int(0.36 * 240)])
        return rows.mean()

    assert brow_row(draw_face(0, width=240, height=240, brow=1.0)) < brow_row(draw_face(0, width=240, height=240)) - 3


def test_caption_draws_readable_text_below_the_face_only():
    plain = draw_face(0.3, width=240, height=240)
    captioned = draw_face(0.3, width=240, height=240, caption="Click the blue button")

    assert dark_pixels(plain, *CAPTION_BAND, threshold=60) == 0
    assert dark_pixels(captioned, *CAPTION_BAND, threshold=60) > 300  # text strokes
    np.testing.assert_array_equal(plain[: int(0.77 * 240)], captioned[: int(0.77 * 240)])


# --- encoding --------------------------------------------------------------------------------------


def frames_of(n, size=SIZE):
    return (draw_face(i / max(n - 1, 1), width=size, height=size) for i in range(n))


def test_encode_pads_short_audio_and_passes_the_stimulus_checks(tmp_path):
    audio = write_wav(tmp_path / "short.wav", 0.3 * np.sin(np.linspace(0, 2000, 4_000)))  # 0.25 s
    facts = encode_stimulus(frames_of(20), audio, tmp_path / "clip.mp4", fps=25, width=SIZE, height=SIZE)

    assert check_stimulus(tmp_path / "clip.mp4") == facts
    assert facts.duration_s == pytest.approx(0.8)
    assert facts.audio_duration_s == pytest.approx(0.8, abs=0.04)
    assert files_in(tmp_path) == ["clip.mp4", "short.wav"]


def test_encode_trims_long_audio(tmp_path, speech):
    facts = encode_stimulus(frames_of(10), speech, tmp_path / "clip.mp4", fps=25, width=SIZE, height=SIZE)

    assert facts.duration_s == pytest.approx(0.4)
    assert facts.audio_duration_s == pytest.approx(0.4, abs=0.04)


def test_encoding_identical_inputs_gives_identical_files(tmp_path, speech):
    first = encode_stimulus(frames_of(12), speech, tmp_path / "a.mp4", width=SIZE, height=SIZE)
    second = encode_stimulus(frames_of(12), speech, tmp_path / "b.mp4", width=SIZE, height=SIZE)

    assert first.sha256 == second.sha256
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def test_a_file_failing_the_checks_is_never_published(tmp_path, speech, monkeypatch):
    def reject(path):
        raise StimulusCheckError(path, ["video codec is mpeg4; re-encode with libx264 -pix_fmt yuv420p"])

    monkeypatch.setattr("render.checks.check_stimulus", reject)  # the check render.encode runs before publishing

    with pytest.raises(StimulusCheckError, match=r"^clip.mp4 is not a usable stimulus video"):
        encode_stimulus(frames_of(3), speech, tmp_path / "clip.mp4", width=SIZE, height=SIZE)
    assert files_in(tmp_path) == []


def test_encode_takes_ntsc_rates_exactly(tmp_path, speech):
    facts = encode_stimulus(frames_of(15), speech, tmp_path / "ntsc.mp4", fps=Fraction(30000, 1001),
                            width=SIZE, height=SIZE)

    assert facts.fps == pytest.approx(29.97003, abs=1e-5)
    assert facts.duration_s == pytest.approx(15 * 1001 / 30000, abs=1e-3)


def test_encode_refuses_odd_sizes_and_no_frames(tmp_path, speech):
    with pytest.raises(ValueError, match="even"):
        encode_stimulus(frames_of(2, 95), speech, tmp_path / "odd.mp4", width=95, height=95)
    with pytest.raises(ValueError, match="no frames"):
        encode_stimulus(iter([]), speech, tmp_path / "empty.mp4", width=SIZE, height=SIZE)
    assert files_in(tmp_path) == []


# --- whole clips -----------------------------------------------------------------------------------


def test_placeholder_clip_passes_checks_and_lasts_as_long_as_the_speech(tmp_path, speech):
    jaw = jaw_envelope(speech, 25)

    facts = make_placeholder_stimulus(tmp_path / "gt.mp4", speech_wav=speech, jaw=jaw, width=SIZE, height=SIZE)

    assert facts.duration_s == pytest.approx(len(jaw) / 25)
    assert (facts.width, facts.height, facts.video_codec) == (SIZE, SIZE, "h264")
    assert facts.audio_duration_s == pytest.approx(facts.duration_s, abs=1 / 25)


def test_conditions_differ_only_through_the_jaw(tmp_path, speech):
    jaw = jaw_envelope(speech, 25)
    shuffled = fit_to_length(jaw[::-1], len(jaw))

    ground_truth = make_placeholder_stimulus(tmp_path / "a.mp4", speech_wav=speech, jaw=jaw, width=SIZE, height=SIZE)
    again = make_placeholder_stimulus(tmp_path / "b.mp4", speech_wav=speech, jaw=jaw, width=SIZE, height=SIZE)
    mismatched = make_placeholder_stimulus(tmp_path / "c.mp4", speech_wav=speech, jaw=shuffled, width=SIZE, height=SIZE)
    still = make_placeholder_stimulus(tmp_path / "d.mp4", speech_wav=speech, jaw=None, width=SIZE, height=SIZE,
                                      caption="Audio check")

    assert ground_truth.sha256 == again.sha256
    assert len({ground_truth.sha256, mismatched.sha256, still.sha256}) == 3
    assert still.duration_s == ground_truth.duration_s


def test_placeholder_refuses_a_jaw_of_the_wrong_length(tmp_path, speech):
    jaw = jaw_envelope(speech, 25)

    with pytest.raises(ValueError, match="fit_to_length"):
        make_placeholder_stimulus(tmp_path / "x.mp4", speech_wav=speech, jaw=jaw[:-5], width=SIZE, height=SIZE)
    assert files_in(tmp_path) == []


def test_blinks_are_seeded_and_come_every_two_to_five_seconds():
    rate = placeholder._frame_rate(25)
    track = placeholder._blink_track(25 * 60, rate, np.random.default_rng(3))

    onsets = np.flatnonzero((track[1:] > 0) & (track[:-1] == 0)) + 1
    gaps_s = np.diff(onsets) / 25

    assert track.max() == 1.0
    assert 0.5 <= onsets[0] / 25 <= 2.1
    assert np.all((gaps_s >= 1.95) & (gaps_s <= 5.05)), gaps_s
    np.testing.assert_array_equal(track, placeholder._blink_track(25 * 60, rate, np.random.default_rng(3)))
    assert not np.array_equal(track, placeholder._blink_track(25 * 60, rate, np.random.default_rng(4)))
