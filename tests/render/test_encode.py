"""Tests for render.encode: the one encoder (audio cut to the motion segment, identical bytes for identical
inputs, nothing left behind on failure) and frame-locked side-by-side composites.

Real ffmpeg; clips are tiny (64×48 to 96×96, one or two seconds) and the audio is synthetic, so the file
runs in seconds. Sound and picture are measured in the decoded files, not taken from the encoder's word.
"""

import subprocess
import wave

import numpy as np
import pytest

import render.encode as encode
import render.placeholder as placeholder
from render.checks import StimulusCheckError, check_stimulus
from render.encode import (
    ExternalToolError,
    composite_side_by_side,
    encode_side_by_side,
    encode_stimulus,
    panel_labels,
)

RATE = 48_000
SIZE = 64


def write_wav(path, samples, sample_rate=RATE):
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return path


def tone_after(silence_s, tone_s, frequency=1000.0):
    """Silence, then a steady tone: the tone's onset is a sharp, measurable event."""
    t = np.arange(round(tone_s * RATE)) / RATE
    return np.concatenate([np.zeros(round(silence_s * RATE)), 0.5 * np.sin(2 * np.pi * frequency * t)])


def decoded_audio(path):
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1",
                          "-ar", str(RATE), "-f", "f32le", "pipe:1"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype="<f4")


def decoded_frames(path, width, height):
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "pipe:1"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, height, width, 3)


def onset_s(samples):
    magnitude = np.abs(samples)
    return int(np.argmax(magnitude >= 0.5 * magnitude.max())) / RATE


def grey_frames(n, size=SIZE, level=128):
    return (np.full((size, size, 3), level, dtype=np.uint8) for _ in range(n))


def files_in(directory):
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A 3 s recording whose tone starts 1.0 s in: the motion segment we want starts there too."""
    return write_wav(tmp_path_factory.mktemp("audio") / "recording.wav", tone_after(1.0, 2.0))


# --- the audio segment ----------------------------------------------------------------------------------


def test_audio_offset_puts_the_segment_start_at_time_zero(tmp_path, recording):
    facts = encode_stimulus(grey_frames(25), recording, tmp_path / "clip.mp4", fps=25, width=SIZE, height=SIZE,
                            audio_offset_s=1.0)

    sound = decoded_audio(tmp_path / "clip.mp4")
    assert onset_s(sound) < 0.002  # the tone that began 1.0 s into the recording begins the clip
    assert np.sqrt(np.mean(sound[: RATE // 10] ** 2)) > 0.3  # and plays from the first tenth of a second
    assert facts.duration_s == pytest.approx(1.0)
    assert abs(facts.audio_duration_s - facts.duration_s) <= 1 / 25


def test_audio_offset_within_the_silence_keeps_the_rest_of_it(tmp_path, recording):
    encode_stimulus(grey_frames(25), recording, tmp_path / "clip.mp4", fps=25, width=SIZE, height=SIZE,
                    audio_offset_s=0.6)

    assert onset_s(decoded_audio(tmp_path / "clip.mp4")) == pytest.approx(0.4, abs=0.003)


def test_audio_running_out_is_padded_with_silence_to_the_video_length(tmp_path, recording):
    # 2 s of video from 2.5 s into a 3 s recording: 0.5 s of tone, then silence.
    facts = encode_stimulus(grey_frames(50), recording, tmp_path / "clip.mp4", fps=25, width=SIZE, height=SIZE,
                            audio_offset_s=2.5)

    sound = decoded_audio(tmp_path / "clip.mp4")
    assert facts.duration_s == pytest.approx(2.0)
    assert abs(facts.audio_duration_s - 2.0) <= 1 / 25
    assert np.abs(sound[: int(0.45 * RATE)]).max() > 0.3
    assert np.abs(sound[int(0.6 * RATE):]).max() < 0.01


def test_audio_offset_past_the_recording_or_negative_is_refused(tmp_path, recording):
    with pytest.raises(ValueError, match=r"audio_offset_s is 3\.500 s but recording\.wav lasts only 3\.000 s"):
        encode_stimulus(grey_frames(5), recording, tmp_path / "a.mp4", width=SIZE, height=SIZE, audio_offset_s=3.5)
    with pytest.raises(ValueError, match="audio_offset_s must be a finite number of seconds >= 0"):
        encode_stimulus(grey_frames(5), recording, tmp_path / "b.mp4", width=SIZE, height=SIZE, audio_offset_s=-0.1)
    assert files_in(tmp_path) == []


def test_a_recordings_length_comes_from_a_pcm_wav_header_or_else_from_ffprobe(tmp_path, monkeypatch):
    import ffmpeg

    def ffprobe_length(path):
        return float(ffmpeg.probe(str(path))["format"]["duration"])

    pcm = write_wav(tmp_path / "pcm.wav", tone_after(0.25, 1.0))
    stereo = tmp_path / "stereo.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(pcm), "-ac", "2", "-c:a", "pcm_s16le", str(stereo)],
                   check=True)
    others = {}  # float WAVs and FLAC are ffprobe's; a 24-bit WAV (WAVE_FORMAT_EXTENSIBLE) is on Python 3.11
    for name, codec in (("float.wav", "pcm_f32le"), ("s24.wav", "pcm_s24le"), ("speech.flac", "flac")):
        others[name] = tmp_path / name
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(pcm), "-c:a", codec, str(others[name])], check=True)
    # a header that promises more samples than the file holds (a stream cut short) is not trusted
    cut = tmp_path / "cut.wav"
    cut.write_bytes(pcm.read_bytes()[:-48_000])  # half a second of 48 kHz 16-bit samples
    expected = {path: ffprobe_length(path) for path in (pcm, stereo, cut, *others.values())}

    for path in (pcm, stereo, *others.values(), cut):
        assert encode._audio_duration_s(path) == pytest.approx(expected[path], abs=1e-3)
    assert encode._audio_duration_s(pcm) == pytest.approx(1.25, abs=1e-9)
    assert expected[cut] == pytest.approx(0.75, abs=1e-3)

    # PCM WAVs are measured without running ffprobe; the others need it
    def no_ffprobe(*args, **kwargs):
        raise AssertionError("ffprobe was run")

    monkeypatch.setattr(encode.ffmpeg, "probe", no_ffprobe)
    assert encode._audio_duration_s(pcm) == pytest.approx(1.25, abs=1e-9)
    assert encode._audio_duration_s(stereo) == pytest.approx(1.25, abs=1e-9)
    for path in (cut, others["float.wav"], others["speech.flac"]):
        with pytest.raises(AssertionError, match="ffprobe was run"):
            encode._audio_duration_s(path)


def test_a_segment_of_pure_silence_fails_the_checks_and_is_not_published(tmp_path, recording):
    with pytest.raises(StimulusCheckError, match="the audio is silent") as caught:
        encode_stimulus(grey_frames(10), recording, tmp_path / "clip.mp4", width=SIZE, height=SIZE,
                        audio_offset_s=0.2)

    assert caught.value.path.endswith("clip.mp4")
    assert files_in(tmp_path) == []


def test_identical_inputs_with_an_offset_give_identical_bytes(tmp_path, recording):
    first = encode_stimulus(grey_frames(20), recording, tmp_path / "a.mp4", width=SIZE, height=SIZE,
                            audio_offset_s=0.9)
    second = encode_stimulus(grey_frames(20), recording, tmp_path / "b.mp4", width=SIZE, height=SIZE,
                             audio_offset_s=0.9)
    shifted = encode_stimulus(grey_frames(20), recording, tmp_path / "c.mp4", width=SIZE, height=SIZE,
                              audio_offset_s=0.95)

    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    assert first.sha256 == second.sha256 != shifted.sha256


def test_frames_are_consumed_as_a_stream(tmp_path, recording):
    produced = []

    def frames():
        for i in range(30):
            produced.append(i)
            yield np.full((SIZE, SIZE, 3), 8 * i, dtype=np.uint8)

    encode_stimulus(frames(), recording, tmp_path / "clip.mp4", width=SIZE, height=SIZE, audio_offset_s=1.0)

    assert produced == list(range(30))
    levels = decoded_frames(tmp_path / "clip.mp4", SIZE, SIZE).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(levels, 8 * np.arange(30), atol=3)  # every frame, in order, none repeated


def test_a_wrong_sized_frame_midway_leaves_nothing(tmp_path, recording):
    def frames():
        yield from grey_frames(7)
        yield np.zeros((SIZE, SIZE + 2, 3), dtype=np.uint8)

    with pytest.raises(ValueError, match=r"frame 7 has shape \(64, 66, 3\)"):
        encode_stimulus(frames(), recording, tmp_path / "clip.mp4", width=SIZE, height=SIZE)
    assert files_in(tmp_path) == []


def test_unreadable_audio_names_the_file_and_leaves_nothing(tmp_path):
    bad = tmp_path / "speech.wav"
    bad.write_text("not audio")

    with pytest.raises(ExternalToolError, match="could not add the audio") as caught:
        encode_stimulus(grey_frames(3), bad, tmp_path / "clip.mp4", width=SIZE, height=SIZE)
    assert "speech.wav" in str(caught.value) and "speech.wav" in caught.value.stderr_tail
    assert files_in(tmp_path) == ["speech.wav"]


def test_placeholder_shares_the_one_encoder():
    assert placeholder.encode_stimulus is encode.encode_stimulus
    assert placeholder.ExternalToolError is encode.ExternalToolError


# --- side-by-side composites -----------------------------------------------------------------------------


def panel(n, level, *, flash_at=None, width=SIZE, height=48):
    for i in range(n):
        yield np.full((height, width, 3), 255 if i == flash_at else level, dtype=np.uint8)


def test_composite_size_frame_count_and_gaps():
    frames = list(composite_side_by_side([panel(6, 40), panel(6, 80), panel(6, 120)], gap=8))

    assert len(frames) == 6
    assert frames[0].shape == (48, 3 * SIZE + 2 * 8, 3)
    assert np.all(frames[0][:, :SIZE] == 40)
    assert np.all(frames[0][:, SIZE + 8:2 * SIZE + 8] == 80)
    assert np.all(frames[0][:, 2 * SIZE + 16:] == 120)
    assert np.all(frames[0][:, SIZE:SIZE + 8] == encode.COMPOSITE_BACKGROUND)


def test_composite_is_made_even_for_yuv420p():
    frame = next(composite_side_by_side([panel(1, 50, width=63, height=47), panel(1, 50, width=63, height=47)], gap=1))

    assert frame.shape == (48, 128, 3)


def test_labels_are_drawn_large_in_a_band_below_or_above():
    tall = dict(height=120)
    below = next(composite_side_by_side([panel(1, 128, **tall), panel(1, 128, **tall)], panel_labels(2)))
    above = next(composite_side_by_side([panel(1, 128, **tall), panel(1, 128, **tall)], ["A", "B"],
                                        label_position="above"))

    band = below.shape[0] - 120
    assert band == 24  # a fifth of the panel's height
    assert np.all(below[:120, :SIZE] == 128) and np.all(above[band:band + 120, :SIZE] == 128)
    letters = below[120:, :, 0] > 200
    assert letters[:, :SIZE].sum() > 20 and letters[:, SIZE + 8:].sum() > 20  # one letter under each panel
    assert not np.array_equal(letters[:, :SIZE], letters[:, SIZE + 8:2 * SIZE + 8])  # "A" is not "B"
    assert (above[:band, :, 0] > 200).sum() == letters.sum()  # the same letters, above


def test_labels_that_could_reveal_a_condition_are_refused():
    with pytest.raises(ValueError, match="'ground_truth' is not a neutral label"):
        composite_side_by_side([panel(1, 0), panel(1, 0)], ["ground_truth", "B"])
    with pytest.raises(ValueError, match="2 labels for 3 panels"):
        composite_side_by_side([panel(1, 0), panel(1, 0), panel(1, 0)], ["A", "B"])
    assert panel_labels(4) == ["A", "B", "C", "D"]


def test_panels_of_different_lengths_or_sizes_are_refused():
    with pytest.raises(ValueError, match=r"panel 2 \(B\) ended after 4 frames"):
        list(composite_side_by_side([panel(5, 0), panel(4, 0)], ["A", "B"]))
    with pytest.raises(ValueError, match="render all panels at one size"):
        list(composite_side_by_side([panel(2, 0), panel(2, 0, width=32)]))
    with pytest.raises(ValueError, match="two or more panels"):
        composite_side_by_side([panel(2, 0)])


def test_encoded_composite_is_frame_locked_and_shares_one_audio_track(tmp_path, recording):
    flash = 13
    facts = encode_side_by_side([panel(25, 60), panel(25, 60, flash_at=flash)], recording, tmp_path / "ab.mp4",
                                fps=25, labels=panel_labels(2), audio_offset_s=1.0)

    width, height = facts.width, facts.height
    frames = decoded_frames(tmp_path / "ab.mp4", width, height).astype(float)
    left = frames[:, 8:40, 8:SIZE - 8].mean(axis=(1, 2, 3))
    right = frames[:, 8:40, SIZE + 16:2 * SIZE].mean(axis=(1, 2, 3))
    assert len(frames) == 25
    assert int(np.argmax(right)) == flash and right[flash] > 200  # B's flash is in the composite's frame 13
    assert np.all(np.delete(right, flash) < 80) and np.all(left < 80)  # and nowhere else, nor in A
    assert onset_s(decoded_audio(tmp_path / "ab.mp4")) < 0.002
    assert check_stimulus(tmp_path / "ab.mp4").audio_codec == "aac"


def test_a_bad_panel_frame_leaves_no_composite_file(tmp_path, recording):
    def broken():
        yield from panel(3, 10)
        yield np.zeros((48, SIZE), dtype=np.uint8)

    with pytest.raises(ValueError, match=r"frame 3 of panel 2 \(B\)"):
        encode_side_by_side([panel(4, 10), broken()], recording, tmp_path / "ab.mp4", labels=["A", "B"],
                            audio_offset_s=1.0)
    assert files_in(tmp_path) == []


@pytest.mark.skipif(not hasattr(__import__("fcntl"), "F_GETPIPE_SZ"), reason="pipe sizes are a Linux feature")
@pytest.mark.parametrize("frame_bytes", [96 * 96 * 3, 512 * 512 * 3])
def test_the_pipe_into_the_encoder_holds_a_whole_frame_and_is_never_narrowed(frame_bytes):
    import fcntl

    process = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        before = fcntl.fcntl(process.stdin.fileno(), fcntl.F_GETPIPE_SZ)
        encode._widen_pipe(process.stdin, frame_bytes)
        after = fcntl.fcntl(process.stdin.fileno(), fcntl.F_GETPIPE_SZ)
    finally:
        process.stdin.close()
        process.wait()
    with open("/proc/sys/fs/pipe-max-size") as setting:
        limit = int(setting.read())
    assert after >= min(frame_bytes, limit) and after >= before
