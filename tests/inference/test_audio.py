"""Tests for inference.audio: decoding every container to the same samples, the canonical WAV, and the
refusal of unusable audio.

Fixtures are made in the test: numpy tones written with the `wave` module, turned into FLAC, MP3 and
M4A by the ffmpeg CLI. Each clip is about two seconds, so the file runs in a few seconds.
"""

import hashlib
import json
import subprocess
import wave

import numpy as np
import pytest

from tests.inference.wavs import write_wav

from inference.audio import (
    SAMPLE_RATE,
    AudioError,
    check_not_silent,
    content_sha256,
    decode,
    transcode_to_wav,
)


def ffmpeg(src, dst, *args):
    subprocess.run(["ffmpeg", "-y", "-hide_banner", "-loglevel", "error", "-i", str(src), *args, str(dst)], check=True)
    return dst


def sine(freq, seconds, sample_rate=SAMPLE_RATE, amplitude=0.5):
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def dominant_hz(samples, sample_rate=SAMPLE_RATE):
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return np.argmax(spectrum) * sample_rate / len(samples)


# Lossless containers keep the length to the sample; MP3 (gapless LAME header) to a few ms; AAC in MP4
# rounds up to whole 1024-sample frames (23 ms at 44.1 kHz), which ffmpeg does not trim at the end.
LENGTH_TOLERANCE_S = {"wav": 0.001, "flac": 0.001, "mp3": 0.005, "m4a": 0.025}


@pytest.fixture(scope="module")
def tone_44k(tmp_path_factory):
    """2.0 s of 440 Hz at 44.1 kHz, stereo, in every container."""
    folder = tmp_path_factory.mktemp("tone")
    src = write_wav(folder / "tone.wav", np.column_stack([sine(440, 2.0, 44_100)] * 2), sample_rate=44_100)
    files = {"wav": src}
    for ext in ("flac", "mp3", "m4a"):
        files[ext] = ffmpeg(src, folder / f"tone.{ext}")
    return files


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "m4a"])
def test_decode_resamples_every_container_to_16k_mono(tone_44k, ext):
    samples = decode(tone_44k[ext])

    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) / SAMPLE_RATE - 2.0) <= LENGTH_TOLERANCE_S[ext]
    assert abs(dominant_hz(samples) - 440.0) <= SAMPLE_RATE / len(samples)
    assert np.abs(samples).max() <= 1.0
    # Identical channels average to the same level (ffmpeg's own stereo matrix would give 0.707 x 2 = 1.41x);
    # the MP3 encoder itself loses about 5 % of this pure tone's level.
    steady = samples[SAMPLE_RATE // 4: -SAMPLE_RATE // 4]
    assert np.sqrt(np.mean(steady ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.08)


def test_decode_at_another_rate(tone_44k):
    samples = decode(tone_44k["flac"], sample_rate=8_000)
    assert len(samples) == 16_000
    assert abs(dominant_hz(samples, 8_000) - 440.0) <= 8_000 / len(samples)


def test_pcm_wav_fast_path_equals_ffmpeg(tmp_path):
    """The stdlib WAV reader and ffmpeg give the same samples, stereo averaged the same way."""
    left, right = sine(440, 1.0), sine(660, 1.0, amplitude=0.25)
    wav = write_wav(tmp_path / "st.wav", np.column_stack([left, right]))
    flac = ffmpeg(wav, tmp_path / "st.flac")

    direct, via_ffmpeg = decode(wav), decode(flac)

    assert len(direct) == len(via_ffmpeg) == SAMPLE_RATE
    np.testing.assert_allclose(direct, (left + right) / 2, atol=1.5 / 32768)
    np.testing.assert_allclose(direct, via_ffmpeg, atol=1e-6)


def test_decode_mono_wav_is_exact(tmp_path):
    x = sine(300, 0.5)
    samples = decode(write_wav(tmp_path / "m.wav", x))
    np.testing.assert_array_equal(samples, (np.round(x * 32767) / 32768).astype(np.float32))


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.wav"):
        decode(tmp_path / "nothere.wav")


@pytest.mark.parametrize("name, content", [
    ("garbage.mp3", bytes(range(256)) * 40),
    ("notes.wav", b"this is not audio at all\n" * 20),
    ("zero.m4a", b""),
])
def test_unreadable_file_is_audio_error_naming_it(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioError, match=name) as caught:
        decode(path)
    assert caught.value.path == str(path)
    assert isinstance(caught.value, ValueError)


def test_empty_wav_is_audio_error(tmp_path):
    path = write_wav(tmp_path / "empty.wav", np.zeros(0))
    with pytest.raises(AudioError, match=r"empty\.wav contains no audio samples"):
        decode(path)


def test_video_without_audio_is_audio_error(tmp_path):
    video = tmp_path / "mute.mp4"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=gray:s=32x32:d=0.2",
                    "-c:v", "libx264", str(video)], check=True)
    with pytest.raises(AudioError, match="mute.mp4"):
        decode(video)


def test_silence_is_refused_with_its_level(tmp_path):
    path = tmp_path / "quiet.wav"
    with pytest.raises(AudioError, match=r"quiet\.wav is silent.*-inf dBFS"):
        check_not_silent(np.zeros(16_000, np.float32), path)
    hum = sine(100, 1.0, amplitude=10 ** (-70 / 20) * np.sqrt(2))  # RMS -70 dBFS
    with pytest.raises(AudioError, match=r"-70\.0 dBFS, below the -60 dBFS"):
        check_not_silent(hum, path)
    with pytest.raises(AudioError, match="no audio samples"):
        check_not_silent(np.zeros(0), path)
    with pytest.raises(AudioError, match="non-finite"):
        check_not_silent(np.array([0.1, np.nan]), path)


def test_check_not_silent_returns_the_rms_level():
    level = check_not_silent(sine(440, 1.0, amplitude=0.5), "x.wav")
    assert level == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.01)  # -9.03 dBFS
    assert check_not_silent(sine(440, 1.0, amplitude=0.01), "x.wav", threshold_dbfs=-50) < -40


def test_transcode_writes_canonical_wav_without_metadata(tmp_path, tone_44k):
    tagged = ffmpeg(tone_44k["wav"], tmp_path / "tagged.mp3", "-metadata", "title=SecretConditionName",
                    "-metadata", "artist=Lab")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    first = transcode_to_wav(tagged, out_dir / "a.wav")

    with wave.open(str(first)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SAMPLE_RATE)
        assert abs(w.getnframes() / SAMPLE_RATE - 2.0) <= LENGTH_TOLERANCE_S["mp3"]
    data = first.read_bytes()
    assert b"SecretConditionName" not in data and b"Lavf" not in data and b"LIST" not in data
    probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json",
                                       str(first)], capture_output=True, check=True).stdout)
    assert not probe["format"].get("tags")
    assert abs(dominant_hz(decode(first)) - 440.0) <= 1.0
    # Same input, same bytes; nothing but the two results is left in the folder.
    second = transcode_to_wav(tagged, out_dir / "b.wav")
    assert second.read_bytes() == data
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.wav", "b.wav"]


def test_transcode_failure_leaves_nothing(tmp_path):
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"\x00" * 1000)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(AudioError, match="bad.flac"):
        transcode_to_wav(bad, out_dir / "x.wav")
    assert list(out_dir.iterdir()) == []


def test_transcode_replaces_existing_file_atomically(tmp_path):
    src = write_wav(tmp_path / "src.wav", sine(220, 0.5, 22_050), sample_rate=22_050)
    dst = tmp_path / "dst.wav"
    dst.write_bytes(b"old")
    transcode_to_wav(src, dst)
    assert len(decode(dst)) == 8_000


def test_content_sha256_matches_hashlib(tmp_path):
    path = tmp_path / "blob.bin"
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # spans several read chunks
    path.write_bytes(data)
    assert content_sha256(path) == hashlib.sha256(data).hexdigest()


def test_bad_sample_rate_is_refused(tone_44k):
    for rate in (0, -16000, 16000.5, True):
        with pytest.raises(ValueError, match="sample_rate"):
            decode(tone_44k["wav"], sample_rate=rate)
