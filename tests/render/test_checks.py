"""Tests for render.checks: a clean clip passes, and each way a clip can break the stimulus rule is caught.

Clips are made here with the ffmpeg command line (not with render.placeholder), 64×64 and one second
long, so these tests stand on their own and stay fast. Each broken clip differs from the clean one in one
respect where possible, and the test asserts that exactly that failure is reported.
"""

import hashlib
import struct
import subprocess

import pytest

from render.checks import StimulusCheckError, StimulusFacts, check_stimulus, is_faststart, probe_stimulus

TEST_PICTURE = "testsrc=size=64x64:rate=25"


def run_ffmpeg(*args):
    subprocess.run(["ffmpeg", "-y", "-hide_banner", "-nostdin", "-loglevel", "error", *args], check=True)


def encode(path, *, picture=TEST_PICTURE, seconds=1.0, audio_seconds=None, video_args=None, audio=True,
           extra=()):
    """Encode a test-pattern clip; by default H.264 yuv420p + AAC, audio as long as the video."""
    video_args = video_args or ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    inputs = ["-f", "lavfi", "-t", str(seconds), "-i", picture]
    outputs = [*video_args]
    if audio:
        inputs += ["-f", "lavfi", "-t", str(audio_seconds or seconds), "-i", "sine=frequency=440:sample_rate=48000"]
        outputs += ["-c:a", "aac", "-b:a", "128k"]
    run_ffmpeg(*inputs, *outputs, *extra, str(path))
    return path


def strip(source, path, *, faststart=True, extra=()):
    """Remux without metadata (stream copy leaves no encoder tag), as the error messages advise."""
    movflags = ["-movflags", "+faststart"] if faststart else []
    run_ffmpeg("-i", str(source), "-map", "0", "-c", "copy", "-map_metadata", "-1", "-fflags", "+bitexact",
               *movflags, *extra, str(path))
    return path


def failures_of(path):
    with pytest.raises(StimulusCheckError) as caught:
        check_stimulus(path)
    assert str(caught.value).startswith(f"{path.name} is not a usable stimulus video")
    return caught.value.failures


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module")
def raw_clip(clips):
    return encode(clips / "raw.mp4")


@pytest.fixture(scope="module")
def good_clip(clips, raw_clip):
    return strip(raw_clip, clips / "good.mp4")


def test_clean_h264_aac_faststart_clip_passes_and_reports_its_facts(good_clip):
    facts = check_stimulus(good_clip)

    assert isinstance(facts, StimulusFacts)
    assert (facts.width, facts.height, facts.fps) == (64, 64, 25.0)
    assert (facts.video_codec, facts.audio_codec, facts.pix_fmt) == ("h264", "aac", "yuv420p")
    assert facts.duration_s == pytest.approx(1.0)
    assert facts.audio_duration_s == pytest.approx(1.0, abs=0.04)
    assert facts.faststart is True
    assert facts.size_bytes == good_clip.stat().st_size
    assert facts.sha256 == hashlib.sha256(good_clip.read_bytes()).hexdigest()
    assert probe_stimulus(good_clip) == facts


def test_plain_mpeg4_encode_is_rejected_for_codec_faststart_and_metadata(clips):
    clip = encode(clips / "mpeg4.mp4", video_args=["-c:v", "mpeg4"])

    failures = failures_of(clip)

    assert any(f.startswith("video codec is mpeg4; re-encode with libx264 -pix_fmt yuv420p") for f in failures)
    assert any("+faststart" in f for f in failures)
    assert any(f.startswith("metadata is not stripped") and "encoder=" in f for f in failures)


def test_vp9_webm_is_rejected_for_container_and_both_codecs(clips):
    clip = clips / "clip.webm"
    run_ffmpeg("-f", "lavfi", "-t", "1", "-i", TEST_PICTURE, "-f", "lavfi", "-t", "1", "-i", "sine=sample_rate=48000",
               "-c:v", "libvpx-vp9", "-deadline", "realtime", "-c:a", "libopus", str(clip))

    failures = failures_of(clip)

    assert any(f.startswith("container is matroska,webm, not MP4") for f in failures)
    assert any(f.startswith("video codec is vp9; re-encode with libx264 -pix_fmt yuv420p") for f in failures)
    assert any(f.startswith("audio codec is opus; re-encode the audio with -c:a aac") for f in failures)


def test_title_tag_is_rejected_naming_the_tag(clips, raw_clip):
    clip = strip(raw_clip, clips / "titled.mp4", extra=["-metadata", "title=ground_truth utt03"])

    assert failures_of(clip) == [
        "metadata is not stripped: container title='ground_truth utt03'; tags can reveal the condition, "
        "model or utterance, remux with -map_metadata -1 -fflags +bitexact"
    ]


def test_encoder_tag_left_by_reencoding_is_rejected(clips):
    clip = encode(clips / "bitexact_encode.mp4",
                  extra=["-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
                         "-flags:a", "+bitexact", "-movflags", "+faststart"])

    assert failures_of(clip) == [
        "metadata is not stripped: video stream encoder='Lavc libx264'; tags can reveal the condition, "
        "model or utterance, remux with -map_metadata -1 -fflags +bitexact"
    ]


def test_language_other_than_und_is_rejected(clips, raw_clip):
    clip = strip(raw_clip, clips / "english.mp4", extra=["-metadata:s:a", "language=eng"])

    assert failures_of(clip) == [
        "metadata is not stripped: audio stream language='eng'; tags can reveal the condition, "
        "model or utterance, remux with -map_metadata -1 -fflags +bitexact"
    ]


def test_clip_without_faststart_is_rejected(clips, raw_clip):
    clip = strip(raw_clip, clips / "slowstart.mp4", faststart=False)

    failures = failures_of(clip)

    assert len(failures) == 1
    assert failures[0].startswith("the moov box does not come before the media data (no +faststart)")
    assert failures[0].endswith("remux with -movflags +faststart")


def test_audio_one_second_longer_than_video_is_rejected(clips):
    clip = strip(encode(clips / "long_audio_raw.mp4", seconds=1.0, audio_seconds=2.0), clips / "long_audio.mp4")

    failures = failures_of(clip)

    assert failures == [
        "audio lasts 2.000 s but video lasts 1.000 s (1.000 s apart, more than one frame = 0.040 s); "
        "pad or trim the audio to the video's length with -af apad=whole_dur=1.000,atrim=end=1.000"
    ]


def test_audio_shorter_by_less_than_a_frame_passes(clips):
    clip = strip(encode(clips / "near_raw.mp4", seconds=1.0, audio_seconds=0.97), clips / "near.mp4")

    facts = check_stimulus(clip)

    assert facts.duration_s - facts.audio_duration_s == pytest.approx(0.03, abs=0.01)


def test_variable_frame_rate_is_rejected(clips):
    # Frames after the 12th arrive 0.2 s late: 25 frames over 1.2 s, the base rate stays 25 fps.
    raw = encode(clips / "vfr_raw.mp4", audio_seconds=1.2,
                 extra=["-vf", r"setpts=N/25/TB+gt(N\,12)*0.2/TB", "-fps_mode", "passthrough"])
    clip = strip(raw, clips / "vfr.mp4")

    failures = failures_of(clip)

    assert len(failures) == 1
    assert failures[0].startswith("the frame rate is variable (base rate 25 fps, average 20.833 fps)")
    assert failures[0].endswith("re-encode at a constant rate with -fps_mode cfr -r 25")


def test_odd_size_and_wrong_pixel_format_are_both_reported(clips):
    raw = encode(clips / "odd_raw.mp4", picture="testsrc=size=63x64:rate=25",
                 video_args=["-c:v", "libx264", "-pix_fmt", "yuv444p"])
    clip = strip(raw, clips / "odd.mp4")

    failures = failures_of(clip)

    assert failures == [
        "pixel format is yuv444p, not yuv420p; re-encode with -pix_fmt yuv420p",
        "size is 63x64; width and height must be even for yuv420p, scale with -vf scale=trunc(iw/2)*2:trunc(ih/2)*2",
    ]


def test_clip_without_audio_is_rejected(clips):
    clip = strip(encode(clips / "silent_raw.mp4", audio=False), clips / "silent.mp4")

    assert failures_of(clip) == ["no audio stream; mux the speech in as AAC with -c:a aac -b:a 128k"]
    assert probe_stimulus(clip).audio_duration_s is None
    assert probe_stimulus(clip).audio_codec == ""


def test_extra_streams_are_rejected(clips, raw_clip):
    clip = clips / "two_audio.mp4"
    run_ffmpeg("-i", str(raw_clip), "-map", "0:v", "-map", "0:a", "-map", "0:a", "-c", "copy", "-map_metadata", "-1",
               "-fflags", "+bitexact", "-movflags", "+faststart", str(clip))

    failures = failures_of(clip)

    assert failures == [
        "extra streams besides one video and one audio: audio (aac); keep only those two with -map 0:v:0 -map 0:a:0"
    ]


def test_error_message_lists_every_failure_and_a_command_that_fixes_the_format(clips):
    clip = encode(clips / "mpeg4_for_message.mp4", video_args=["-c:v", "mpeg4"])

    with pytest.raises(StimulusCheckError) as caught:
        check_stimulus(clip)

    message = str(caught.value)
    for failure in caught.value.failures:
        assert f"- {failure}" in message
    assert "A re-encode that meets the format rules: ffmpeg -i IN" in message
    assert isinstance(caught.value, ValueError)


def test_the_advised_reencode_command_fixes_a_failing_clip(clips):
    clip = clips / "advice.webm"
    run_ffmpeg("-f", "lavfi", "-t", "1", "-i", TEST_PICTURE, "-f", "lavfi", "-t", "1", "-i", "sine=sample_rate=48000",
               "-c:v", "libvpx-vp9", "-deadline", "realtime", "-c:a", "libopus", "-metadata", "title=secret", str(clip))
    with pytest.raises(StimulusCheckError) as caught:
        check_stimulus(clip)
    command = str(caught.value).split("A re-encode that meets the format rules: ")[1]
    middle, fixed = clips / "advice_mid.mp4", clips / "advice_fixed.mp4"
    command = command.replace("MID.mp4", str(middle)).replace("OUT.mp4", str(fixed)).replace("IN", str(clip))

    subprocess.run(command.replace("ffmpeg ", "ffmpeg -y -loglevel error -nostdin "), shell=True, check=True)

    assert check_stimulus(fixed).video_codec == "h264"


def test_a_file_that_is_not_a_video_is_rejected(tmp_path):
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video")

    failures = failures_of(not_video)

    assert len(failures) == 1
    assert failures[0].startswith("ffprobe cannot read the file as a video")


def test_a_missing_file_is_rejected(tmp_path):
    assert failures_of(tmp_path / "gone.mp4") == ["the file does not exist"]


def box(kind, payload=b""):
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def test_faststart_means_moov_before_mdat_at_top_level(tmp_path):
    fast, slow, wide = tmp_path / "fast.mp4", tmp_path / "slow.mp4", tmp_path / "wide.mp4"
    fast.write_bytes(box(b"ftyp", b"isom") + box(b"moov", b"x" * 10) + box(b"mdat", b"y" * 100))
    slow.write_bytes(box(b"ftyp", b"isom") + box(b"mdat", b"y" * 100) + box(b"moov", b"x" * 10))
    # A 64-bit-sized mdat first (size field 1, real size after the type) still counts as before moov.
    large_mdat = struct.pack(">I4sQ", 1, b"mdat", 16 + 4) + b"data"
    wide.write_bytes(box(b"ftyp", b"isom") + large_mdat + box(b"moov"))

    assert is_faststart(fast) is True
    assert is_faststart(slow) is False
    assert is_faststart(wide) is False
