"""Tests for render.checks: a clean clip passes, and each way a clip can break the stimulus rule is caught.

Clips are made here with the ffmpeg command line (not with render.placeholder), mostly 64×64 and one
second long, so these tests stand on their own and stay fast. Each broken clip differs from the clean one in one
respect where possible, and the test asserts that exactly that failure is reported.
"""

import hashlib
import math
import struct
import subprocess
from fractions import Fraction

import numpy as np
import pytest

from render.checks import (
    StimulusCheckError,
    StimulusFacts,
    audio_level_dbfs,
    check_stimulus,
    is_faststart,
    probe_stimulus,
    reencode_upload,
    usual_frame_rate,
)

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


# --- silence, damage, uneven frames ------------------------------------------------------------------------


def test_silent_audio_is_rejected_and_reencoding_is_not_offered(clips):
    raw = encode(clips / "mute_raw.mp4")
    clip = clips / "mute.mp4"
    run_ffmpeg("-i", str(raw), "-f", "lavfi", "-t", "1", "-i", "anullsrc=r=48000:cl=mono", "-map", "0:v", "-map", "1:a",
               "-c:v", "copy", "-c:a", "aac", "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact",
               "-movflags", "+faststart", str(clip))

    with pytest.raises(StimulusCheckError) as caught:
        check_stimulus(clip)

    assert caught.value.failures == [
        "the audio is silent (digital silence over the whole clip, below the -60 dBFS floor); mux the speech in: "
        "a silent track usually means the wrong audio file, a muted export, or an audio offset past the end of "
        "the speech"
    ]
    assert caught.value.reencode_helps is False
    assert str(caught.value).endswith("Re-encoding cannot fix all of this: export or record the video again.")
    assert audio_level_dbfs(clip) == -math.inf


def test_quiet_audio_above_the_floor_passes_and_its_level_is_measured(clips, good_clip):
    raw = encode(clips / "quiet_raw.mp4")
    quiet = clips / "quiet.mp4"
    run_ffmpeg("-i", str(raw), "-map", "0", "-c:v", "copy", "-af", "volume=-30dB", "-c:a", "aac",
               "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact", "-movflags", "+faststart",
               str(quiet))

    check_stimulus(quiet)
    # ffmpeg's test sine has amplitude 1/8: RMS 0.088, -21 dBFS; 30 dB quieter is -51 dBFS.
    assert audio_level_dbfs(good_clip) == pytest.approx(-21.1, abs=0.5)
    assert audio_level_dbfs(quiet) == pytest.approx(-51.1, abs=0.5)


def test_a_truncated_upload_is_reported_as_damaged(clips, good_clip):
    data = good_clip.read_bytes()
    truncated = clips / "truncated.mp4"
    truncated.write_bytes(data[: len(data) * 2 // 3])  # moov comes first (+faststart), so ffprobe still reads it

    with pytest.raises(StimulusCheckError) as caught:
        check_stimulus(truncated)

    damage = [f for f in caught.value.failures if f.startswith("the file is damaged")]
    assert len(damage) == 1 and damage[0].endswith("it may be truncated or corrupt, so copy or export it again")
    assert caught.value.reencode_helps is False


def test_a_scrambled_upload_is_reported_as_damaged(clips, good_clip):
    data = bytearray(good_clip.read_bytes())
    rng = np.random.default_rng(0)
    for position in np.arange(len(data) // 2, len(data) - 64, 37):  # the header and first half stay intact
        data[position] = int(rng.integers(256))
    scrambled = clips / "scrambled.mp4"
    scrambled.write_bytes(bytes(data))

    failures = failures_of(scrambled)

    assert any(f.startswith("the file is damaged: decoding it fails (") for f in failures)


def test_an_audio_only_file_is_rejected_for_having_no_video(clips):
    sound = clips / "sound.m4a"
    run_ffmpeg("-f", "lavfi", "-t", "1", "-i", "sine=sample_rate=48000", "-c:a", "aac", str(sound))

    assert failures_of(sound) == ["the file has no video stream"]


def test_uneven_frames_with_a_correct_average_are_rejected(clips):
    # 10 s at 25 fps; frames 200-210 alternate 20 ms early and on time, so the average stays exactly 25 fps and
    # ffprobe's base-rate guess (from the first seconds) also says 25: only the frame intervals tell.
    raw = encode(clips / "uneven_raw.mp4", picture="testsrc=size=32x32:rate=25", seconds=10,
                 extra=["-vf", r"settb=1/12800,setpts=(N/25+between(N\,200\,210)*mod(N\,2)*0.02)/TB",
                        "-fps_mode", "passthrough", "-enc_time_base:v", "1/12800"])
    clip = strip(raw, clips / "uneven.mp4")

    failures = failures_of(clip)

    assert failures == [
        "the frame rate is variable: 10 of 249 frame intervals differ from 1/25 s = 40.0 ms (from 20.1 to 59.9 ms), "
        "though the average is 25 fps; re-encode at a constant rate with -fps_mode cfr -r 25"
    ]


def test_a_concatenation_of_two_rates_is_rejected_and_the_usual_rate_suggested(clips, vfr_concat):
    failures = failures_of(vfr_concat)

    # ffprobe's base rate is 50 (both rates' timestamps fit it); 25 fps is what most frames were shown at.
    assert any(f.startswith("the frame rate is variable (base rate 50 fps, average 18.")
               and f.endswith("-fps_mode cfr -r 25") for f in failures)
    assert usual_frame_rate(vfr_concat) == 25


@pytest.fixture(scope="module")
def vfr_concat(clips):
    """1 s at 25 fps then 1 s at 10 fps in one variable-rate MP4, 4:4:4 chroma, metadata and all."""
    path = clips / "concat.mp4"
    run_ffmpeg("-f", "lavfi", "-i", "testsrc=size=63x48:rate=25:duration=1",
               "-f", "lavfi", "-i", "testsrc=size=63x48:rate=10:duration=1",
               "-f", "lavfi", "-t", "2", "-i", "sine=frequency=300:sample_rate=44100",
               "-filter_complex", "[0:v][1:v]concat=n=2:v=1:a=0[v]", "-map", "[v]", "-map", "2:a",
               "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p",
               "-c:a", "aac", "-metadata", "title=model_B utt07", str(path))
    return path


# --- the offer to re-encode -------------------------------------------------------------------------------


def test_fixable_failures_come_with_the_offer_to_reencode(clips, vfr_concat):
    with pytest.raises(StimulusCheckError) as caught:
        check_stimulus(vfr_concat)

    assert caught.value.reencode_helps is True
    assert "The platform can re-encode it to the rules for you (render.checks.reencode_upload)." in str(caught.value)


def test_reencode_upload_fixes_a_variable_rate_444_odd_sized_tagged_upload(clips, vfr_concat):
    fixed = clips / "concat_fixed.mp4"

    facts = reencode_upload(vfr_concat, fixed)

    assert check_stimulus(fixed) == facts
    assert (facts.fps, facts.width, facts.height, facts.pix_fmt) == (25.0, 62, 48, "yuv420p")
    # The 10 fps second became 25 fps without changing the clip's length.
    assert facts.duration_s == pytest.approx(probe_stimulus(vfr_concat).duration_s, abs=0.04)
    assert abs(facts.audio_duration_s - facts.duration_s) <= 0.04
    assert sorted(p.name for p in clips.iterdir() if p.name.startswith(".")) == []


def test_reencode_upload_keeps_the_sound_where_it_was_against_the_picture(clips):
    late = clips / "late_sound.mp4"
    run_ffmpeg("-f", "lavfi", "-t", "2", "-i", TEST_PICTURE, "-itsoffset", "0.5", "-f", "lavfi", "-t", "1.5",
               "-i", "sine=frequency=1000:sample_rate=48000", "-map", "0:v", "-map", "1:a", "-c:v", "libx264",
               "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(late))
    fixed = clips / "late_sound_fixed.mp4"

    reencode_upload(late, fixed, fps=25)

    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(fixed), "-map", "0:a", "-ac", "1", "-ar", "48000",
                          "-f", "f32le", "pipe:1"], capture_output=True, check=True).stdout
    sound = np.abs(np.frombuffer(raw, dtype="<f4"))
    assert np.argmax(sound > 0.5 * sound.max()) / 48000 == pytest.approx(0.5, abs=0.01)


def test_reencode_upload_refuses_what_it_cannot_fix(clips, good_clip, tmp_path):
    no_sound = encode(clips / "no_sound.mp4", audio=False)
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(good_clip.read_bytes()[: good_clip.stat().st_size // 2])

    with pytest.raises(StimulusCheckError, match="no audio stream; re-encoding cannot add one") as caught:
        reencode_upload(no_sound, tmp_path / "a.mp4")
    assert caught.value.reencode_helps is False
    with pytest.raises(StimulusCheckError, match="the file is damaged"):
        reencode_upload(truncated, tmp_path / "b.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4"]


def test_usual_frame_rate_of_constant_rate_files_is_their_own_rate(clips, good_clip):
    film = encode(clips / "film.mp4", picture="testsrc=size=64x64:rate=24", seconds=0.5)
    ntsc = encode(clips / "ntsc.mp4", picture="testsrc=size=64x64:rate=30000/1001", seconds=0.5)

    assert usual_frame_rate(good_clip) == 25
    assert usual_frame_rate(film) == 24  # not 24000/1001, though within 1 % of it
    assert usual_frame_rate(ntsc) == Fraction(30000, 1001)
