"""Tests for inference.features: exact row counts, alignment to motion frames, values checked against
librosa and against tones of known pitch, the normalizer, and the disk cache.

Audio is generated here (tones, bursts, chirps, noise) and kept to a couple of seconds, so the file runs
in a few seconds; eGeMAPS (openSMILE) is the slowest kind and gets the shortest clips.
"""

import json

import librosa
import numpy as np
import pytest

from tests.inference.wavs import write_wav

import inference.features as features
from inference.audio import SAMPLE_RATE
from inference.features import (
    EGEMAPS_LLD_NAMES,
    KINDS,
    FeatureSpec,
    Normalizer,
    cache_key,
    extract,
    extract_cached,
    feature_dim,
    feature_names,
    feature_shape,
)

SR = SAMPLE_RATE
FPS_VALUES = [25, 30, 29.97, 60]
SILENT_LOG = np.log(features.LOG_FLOOR)


def harmonic_tone(f0, seconds, amplitude=0.3, harmonics=5):
    t = np.arange(round(seconds * SR)) / SR
    tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, harmonics + 1))
    return (amplitude * tone / np.abs(tone).max()).astype(np.float32)


def burst_at_one_second(total_s=2.0, freq=1000.0):
    """Digital silence, then a tone from exactly t = 1.000 s (sample 16000) to the end."""
    x = np.zeros(round(total_s * SR), np.float32)
    t = np.arange(len(x) - SR) / SR
    x[SR:] = 0.5 * np.sin(2 * np.pi * freq * t)
    return x


@pytest.fixture(scope="module")
def noise():
    return (0.1 * np.random.default_rng(7).standard_normal(round(1.2345 * SR))).astype(np.float32)


# --- the spec ------------------------------------------------------------------------------------------


def test_spec_fills_defaults_and_round_trips_through_json():
    spec = FeatureSpec("mel_slices", 25, {"context": 16})
    assert spec.fps == 25.0 and isinstance(spec.fps, float)
    assert spec.param("context") == 16 and spec.param("n_mels") == 80 and spec.param("flatten") is False
    again = FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and hash(again) == hash(spec)
    assert spec.to_json() == again.to_json()
    # Explicit defaults, int vs float and the order of params do not change what is computed, nor the key.
    assert FeatureSpec("mel_slices", 25.0, {"context": 16, "n_mels": 80, "hop_s": 0.01}) == spec
    assert FeatureSpec("mel_slices", 25, {"context": 32}) != spec
    assert len({FeatureSpec(k, 25) for k in KINDS}) == len(KINDS)


def test_spec_refuses_bad_input_with_the_fix():
    with pytest.raises(ValueError, match="unknown feature kind 'mfcc'; choose one of: logmel, fbank, "
                                         "mfcc_prosody, egemaps, mel_slices"):
        FeatureSpec("mfcc", 25)
    for fps in (0, -25, float("nan"), float("inf"), True, "25"):
        with pytest.raises(ValueError, match="fps must be a positive frame rate"):
            FeatureSpec("logmel", fps)
    with pytest.raises(ValueError, match=r"logmel does not take parameter\(s\) 'context'; it takes: n_mels, window_s"):
        FeatureSpec("logmel", 25, {"context": 3})
    with pytest.raises(ValueError, match="'context' must be a positive whole number"):
        FeatureSpec("mel_slices", 25, {"context": 2.5})
    with pytest.raises(ValueError, match="'flatten' must be true or false"):
        FeatureSpec("mel_slices", 25, {"flatten": 1})
    with pytest.raises(ValueError, match="f0_min_hz < f0_max_hz"):
        FeatureSpec("mfcc_prosody", 25, {"f0_min_hz": 300, "f0_max_hz": 200})
    with pytest.raises(KeyError, match="no parameter 'nope'"):
        FeatureSpec("fbank", 25).param("nope")


def test_shapes_dims_and_names():
    expected = {"logmel": (80,), "fbank": (40,), "mfcc_prosody": (27,), "egemaps": (25,), "mel_slices": (32, 80)}
    for kind, shape in expected.items():
        spec = FeatureSpec(kind, 25)
        assert feature_shape(spec) == shape
        assert feature_dim(spec) == shape[-1] == len(feature_names(spec))
    flat = FeatureSpec("mel_slices", 25, {"flatten": True, "context": 4})
    assert feature_shape(flat) == (320,) and feature_names(flat)[80] == "t01_mel_00"
    assert feature_names(FeatureSpec("mfcc_prosody", 25))[-2:] == ["f0_hz", "intensity_db"]
    assert feature_names(FeatureSpec("egemaps", 25)) == list(EGEMAPS_LLD_NAMES)


# --- row counts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fps", FPS_VALUES)
def test_exact_row_counts(noise, kind, fps):
    spec = FeatureSpec(kind, fps)
    duration = len(noise) / SR  # 1.2345 s: no whole number of frames at any of these rates
    natural = extract(noise, spec)
    assert natural.shape == (round(duration * fps), *feature_shape(spec))
    assert natural.dtype == np.float32 and np.isfinite(natural).all()
    longer = extract(noise, spec, n_frames=len(natural) + 3)
    shorter = extract(noise, spec, n_frames=len(natural) - 2)
    assert longer.shape[0] == len(natural) + 3 and shorter.shape[0] == len(natural) - 2
    np.testing.assert_array_equal(longer[: len(natural)], natural)
    np.testing.assert_array_equal(longer[len(natural):], np.repeat(natural[-1:], 3, axis=0))  # edge padding
    np.testing.assert_array_equal(shorter, natural[:-2])


def test_very_short_audio_still_gives_the_rows_asked_for():
    blip = np.full(100, 0.1, np.float32)  # 6 ms: less than half a frame
    assert extract(blip, FeatureSpec("logmel", 25)).shape == (1, 80)
    assert extract(blip, FeatureSpec("fbank", 25), n_frames=5).shape == (5, 40)


@pytest.mark.parametrize("bad, message", [
    (np.array([0.1, np.nan, 0.2], np.float32), r"NaN or infinity \(1 values, first at index 1\)"),
    (np.array([0.1, np.inf], np.float32), "NaN or infinity"),
    (np.zeros((100, 2), np.float32), "1-D mono"),
    (np.zeros(0, np.float32), "empty"),
])
def test_bad_samples_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        extract(bad, FeatureSpec("logmel", 25))


def test_bad_n_frames_and_sample_rate_are_refused(noise):
    for n in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n_frames must be a positive whole number"):
            extract(noise, FeatureSpec("logmel", 25), n_frames=n)
    with pytest.raises(ValueError, match="sample_rate"):
        extract(noise, FeatureSpec("logmel", 25), sample_rate=0)
    with pytest.raises(TypeError, match="FeatureSpec"):
        extract(noise, {"kind": "logmel", "fps": 25})


# --- values against librosa ----------------------------------------------------------------------------


def librosa_at_frame_centres(x, fps, **kwargs):
    """librosa's centred STFT frames sit at t * hop; starting the signal half a hop late puts them on the
    motion-frame centres (i + 0.5) / fps. Only interior frames compare: the first window's left edge
    sees the cut-off half hop as silence."""
    hop = round(SR / fps)
    return librosa.feature.melspectrogram(y=x[hop // 2:], sr=SR, hop_length=hop, power=2.0, **kwargs).T


def test_logmel_equals_librosa_melspectrogram():
    x = np.random.default_rng(1).standard_normal(2 * SR).astype(np.float32) * 0.1
    ours = extract(x, FeatureSpec("logmel", 25))
    reference = np.log(librosa_at_frame_centres(x, 25, n_fft=1024, n_mels=80) + 1e-6)
    np.testing.assert_allclose(ours[2:-2], reference[2: len(ours) - 2], atol=1e-4)


def test_fbank_window_is_two_frames_and_hop_one():
    x = np.random.default_rng(2).standard_normal(2 * SR).astype(np.float32) * 0.1
    ours = extract(x, FeatureSpec("fbank", 25))
    reference = np.log(librosa_at_frame_centres(x, 25, n_fft=2048, win_length=1280, n_mels=40) + 1e-6)
    np.testing.assert_allclose(ours[2:-2], reference[2: len(ours) - 2], atol=1e-4)


def test_mfccs_equal_librosa():
    x = np.random.default_rng(3).standard_normal(2 * SR).astype(np.float32) * 0.1
    ours = extract(x, FeatureSpec("mfcc_prosody", 25))[:, :25]
    mel = librosa_at_frame_centres(x, 25, n_fft=1024, n_mels=40).T
    reference = librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None), n_mfcc=25).T
    np.testing.assert_allclose(ours[2:-2], reference[2: len(ours) - 2], atol=2e-3)


def test_mel_slices_are_librosa_fine_frames_around_each_motion_frame():
    x = np.random.default_rng(4).standard_normal(SR).astype(np.float32) * 0.1
    spec = FeatureSpec("mel_slices", 30, {"context": 8})
    ours = extract(x, spec)
    fine = np.log(librosa.feature.melspectrogram(y=x, sr=SR, n_fft=512, win_length=400, hop_length=160,
                                                 n_mels=80, pad_mode="constant").T + 1e-6)
    for i in (3, 10, 25):
        centre_in_fine_frames = (i + 0.5) / 30 * 100
        first = int(np.floor(centre_in_fine_frames - 3.5 + 0.5))
        assert abs((first + 3.5) - centre_in_fine_frames) <= 0.5  # the slice is centred on the frame
        np.testing.assert_allclose(ours[i], fine[first: first + 8], atol=1e-4)
    flat = extract(x, FeatureSpec("mel_slices", 30, {"context": 8, "flatten": True}))
    np.testing.assert_array_equal(flat, ours.reshape(len(ours), -1))


# --- alignment -----------------------------------------------------------------------------------------


def frame_containing(t, fps):
    return int(np.floor(t * fps))


@pytest.mark.parametrize("fps", [25, 30, 29.97])
def test_burst_raises_logmel_in_its_own_frame_not_two_before(fps):
    x = burst_at_one_second()
    k = frame_containing(1.0, fps)
    assert k / fps <= 1.0 < (k + 1) / fps
    for kind in ("logmel", "fbank"):
        energy = extract(x, FeatureSpec(kind, fps)).max(axis=1)
        assert energy[k] > SILENT_LOG + 10, kind
        assert energy[k - 2] == pytest.approx(SILENT_LOG), kind  # exactly the floor: nothing leaked back


@pytest.mark.parametrize("fps", FPS_VALUES)
def test_burst_raises_intensity_exactly_from_its_frame(fps):
    intensity = extract(burst_at_one_second(), FeatureSpec("mfcc_prosody", fps))[:, 26]
    k = frame_containing(1.0, fps)
    assert intensity[k] > -40
    assert intensity[k + 1] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.2)
    assert (intensity[:k] == features.INTENSITY_FLOOR_DB).all()  # the frame's own interval only


def test_fbank_at_60_fps_keeps_its_window_to_two_frames():
    energy = extract(burst_at_one_second(), FeatureSpec("fbank", 60)).max(axis=1)
    k = frame_containing(1.0, 60)
    assert energy[k] > SILENT_LOG + 10 and energy[k - 2] == pytest.approx(SILENT_LOG)


def test_mel_slices_see_the_burst_where_it_is():
    spec = FeatureSpec("mel_slices", 25)
    slices = extract(burst_at_one_second(), spec)
    k = frame_containing(1.0, 25)  # frame 25, centred at 1.02 s: the onset is 2 fine frames before the middle
    energy = slices[k].max(axis=1)
    first_fine = int(np.floor(1.02 * 100 - 15.5 + 0.5))  # 87: fine frames 87..118 around 1.02 s
    # Fine frame 98 (centred at 0.98 s, 25 ms window) ends before 1.000 s; frame 100 is centred on it.
    assert energy[: 98 - first_fine + 1] == pytest.approx(SILENT_LOG)
    assert np.flatnonzero(energy > SILENT_LOG + 10)[0] == 100 - first_fine
    assert slices[k - 5].max(axis=1) == pytest.approx(SILENT_LOG)  # fine frames 67..98: all before the onset


# --- F0 ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("f0", [110.0, 200.0, 330.0])
def test_f0_of_a_harmonic_tone_and_zero_in_silence(f0):
    x = np.concatenate([np.zeros(SR // 2, np.float32), harmonic_tone(f0, 1.0), np.zeros(SR // 2, np.float32)])
    track = extract(x, FeatureSpec("mfcc_prosody", 25))[:, 25]
    centres = (np.arange(len(track)) + 0.5) / 25
    inside = (centres > 0.55) & (centres < 1.45)  # whole 64 ms window within the tone
    outside = (centres < 0.45) | (centres > 1.55)
    np.testing.assert_allclose(track[inside], f0, rtol=0.005)
    assert (track[outside] == 0).all()


def test_f0_follows_a_glide():
    t = np.arange(2 * SR) / SR
    f_start, f_end = 100.0, 300.0  # linear glide; instantaneous frequency f_start + (f_end - f_start) t / 2
    phase = 2 * np.pi * (f_start * t + (f_end - f_start) * t ** 2 / 4)
    x = (0.3 * (np.sin(phase) + 0.5 * np.sin(2 * phase))).astype(np.float32)
    track = extract(x, FeatureSpec("mfcc_prosody", 30))[:, 25]
    centres = (np.arange(len(track)) + 0.5) / 30
    interior = (centres > 0.1) & (centres < 1.9)
    np.testing.assert_allclose(track[interior], f_start + (f_end - f_start) * centres[interior] / 2, rtol=0.02)


def test_noise_is_unvoiced(noise):
    track = extract(noise, FeatureSpec("mfcc_prosody", 25))[:, 25]
    assert (track == 0).mean() >= 0.9


def test_f0_window_too_short_for_lowest_pitch_is_explained(noise):
    spec = FeatureSpec("mfcc_prosody", 25, {"window_s": 0.02, "f0_min_hz": 60})
    with pytest.raises(ValueError, match="too short to find F0 down to 60 Hz; use window_s >= 0.034"):
        extract(noise, spec)


# --- eGeMAPS -------------------------------------------------------------------------------------------


def test_egemaps_descriptors_follow_the_audio():
    x = np.concatenate([np.zeros(SR // 2, np.float32), harmonic_tone(200.0, 1.0), np.zeros(SR // 2, np.float32)])
    lld = extract(x, FeatureSpec("egemaps", 25))
    assert lld.shape == (50, 25)
    loudness = lld[:, EGEMAPS_LLD_NAMES.index("Loudness_sma3")]
    semitones = lld[:, EGEMAPS_LLD_NAMES.index("F0semitoneFrom27.5Hz_sma3nz")]
    tone, silence = slice(16, 34), list(range(0, 10)) + list(range(42, 50))  # frames 0.64-1.36 s vs far outside
    assert loudness[tone].min() > 10 * max(loudness[silence].max(), 1e-3)
    np.testing.assert_allclose(semitones[tone], 12 * np.log2(200 / 27.5), atol=0.3)  # 34.36 semitones
    assert (semitones[silence] == 0).all()


def test_egemaps_refuses_audio_shorter_than_its_pitch_window():
    with pytest.raises(ValueError, match="audio of 50 ms is too short for eGeMAPS; it needs at least 60 ms"):
        extract(harmonic_tone(200.0, 0.05), FeatureSpec("egemaps", 25))


def test_egemaps_interpolates_frames_without_a_descriptor():
    # At 120 fps a motion frame (8.3 ms) is shorter than openSMILE's 10 ms hop, so some frames hold none.
    x = harmonic_tone(150.0, 0.5)
    lld = extract(x, FeatureSpec("egemaps", 120))
    assert lld.shape == (60, 25) and np.isfinite(lld).all()
    loudness = lld[:, 0]
    assert np.all(loudness[10:-10] > 0.5 * np.median(loudness))  # no hole of zeros where frames were empty


# --- normalizer ----------------------------------------------------------------------------------------


def corpus(rng, n=6, dim=5):
    scales = np.array([1.0, 10.0, 0.01, 3.0, 0.0])  # the last feature is constant
    offsets = np.array([0.0, -5.0, 1e4, 2.0, 7.0])
    return [(rng.standard_normal((rng.integers(20, 60), dim)) * scales + offsets).astype(np.float32)
            for _ in range(n)]


def test_normalizer_standardises_the_corpus():
    arrays = corpus(np.random.default_rng(0))
    norm = Normalizer.fit(a for a in arrays)  # a generator: statistics stream
    everything = np.concatenate(arrays).astype(np.float64)
    np.testing.assert_allclose(norm.mean, everything.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(norm.std[:4], everything.std(axis=0)[:4], rtol=1e-5)
    assert norm.std[4] == Normalizer.STD_FLOOR
    normalised = np.concatenate([norm.apply(a) for a in arrays])
    assert normalised.dtype == np.float32 and np.isfinite(normalised).all()
    np.testing.assert_allclose(normalised.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(normalised.std(axis=0)[:4], 1, atol=1e-3)
    np.testing.assert_array_equal(normalised[:, 4], 0)


def test_normalizer_round_trips_and_inverts():
    arrays = corpus(np.random.default_rng(1))
    norm = Normalizer.fit(arrays)
    restored = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_array_equal(restored.mean, norm.mean)
    np.testing.assert_array_equal(restored.std, norm.std)
    x = arrays[0][:, :4]
    four = Normalizer(mean=norm.mean[:4], std=norm.std[:4])
    np.testing.assert_allclose(four.invert(four.apply(x)), x, rtol=1e-5, atol=1e-5 * np.abs(x).max())


def test_normalizer_works_on_slices_over_the_last_axis():
    rng = np.random.default_rng(2)
    slices = [rng.standard_normal((10, 8, 3)) * [1, 2, 3] + [4, 5, 6] for _ in range(4)]
    norm = Normalizer.fit(slices)
    np.testing.assert_allclose(norm.mean, np.concatenate(slices).reshape(-1, 3).mean(axis=0), rtol=1e-6)
    out = norm.apply(slices[0])
    assert out.shape == (10, 8, 3)
    np.testing.assert_allclose(norm.invert(out), slices[0], atol=1e-5)


def test_normalizer_refuses_bad_input():
    with pytest.raises(ValueError, match="no data"):
        Normalizer.fit([])
    with pytest.raises(ValueError, match="same feature dimension"):
        Normalizer.fit([np.zeros((3, 4)), np.zeros((3, 5))])
    with pytest.raises(ValueError, match="NaN or infinity"):
        Normalizer.fit([np.array([[1.0, np.nan]])])
    norm = Normalizer.fit([np.arange(12.0).reshape(4, 3)])
    with pytest.raises(ValueError, match="dimension 3"):
        norm.apply(np.zeros((5, 4)))
    with pytest.raises(ValueError, match="'mean'"):
        Normalizer.from_dict({"std": [1.0]})


# --- cache ---------------------------------------------------------------------------------------------


@pytest.fixture
def counted_extract(monkeypatch):
    calls = []
    real = features.extract

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(features, "extract", counting)
    return calls


def test_cache_computes_once_and_serves_any_length(tmp_path, counted_extract):
    wav = write_wav(tmp_path / "a.wav", harmonic_tone(150.0, 1.01))
    spec = FeatureSpec("logmel", 25)
    cache = tmp_path / "cache"

    first = extract_cached(wav, spec, cache_dir=cache)
    second = extract_cached(wav, spec, cache_dir=cache)
    padded = extract_cached(wav, spec, cache_dir=cache, n_frames=len(first) + 2)

    assert len(counted_extract) == 1
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(padded, np.concatenate([first, first[-1:], first[-1:]]))
    as_decoded = np.round(harmonic_tone(150.0, 1.01) * 32767) / 32768  # what the 16-bit WAV holds
    np.testing.assert_array_equal(first, extract(as_decoded, spec))
    assert [p.name for p in cache.iterdir()] == [f"logmel-{cache_key(features.content_sha256(wav), spec)}.npy"]


def test_cache_key_changes_with_spec_content_and_version(tmp_path, counted_extract, monkeypatch):
    a = write_wav(tmp_path / "a.wav", harmonic_tone(150.0, 0.5))
    b = write_wav(tmp_path / "b.wav", harmonic_tone(151.0, 0.5))
    cache = tmp_path / "cache"
    extract_cached(a, FeatureSpec("logmel", 25), cache_dir=cache)
    extract_cached(a, FeatureSpec("logmel", 30), cache_dir=cache)
    extract_cached(a, FeatureSpec("fbank", 25), cache_dir=cache)
    extract_cached(b, FeatureSpec("logmel", 25), cache_dir=cache)
    assert len(counted_extract) == 4 and len(list(cache.iterdir())) == 4

    key = cache_key("0" * 64, FeatureSpec("logmel", 25))
    monkeypatch.setattr(features, "FEATURES_VERSION", features.FEATURES_VERSION + 1)
    assert cache_key("0" * 64, FeatureSpec("logmel", 25)) != key


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape", "nan", "float64"])
def test_corrupt_cache_file_is_recomputed(tmp_path, counted_extract, damage):
    wav = write_wav(tmp_path / "a.wav", harmonic_tone(150.0, 0.5))
    spec = FeatureSpec("fbank", 25)
    cache = tmp_path / "cache"
    good = extract_cached(wav, spec, cache_dir=cache)
    (path,) = cache.iterdir()
    if damage == "garbage":
        path.write_bytes(b"\x93NUMPY but not really" * 10)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-50])
    elif damage == "wrong_shape":
        np.save(path, np.zeros((len(good), 39), np.float32))
    elif damage == "nan":
        np.save(path, np.full_like(good, np.nan))
    else:
        np.save(path, good.astype(np.float64))

    again = extract_cached(wav, spec, cache_dir=cache)

    assert len(counted_extract) == 2
    np.testing.assert_array_equal(again, good)
    np.testing.assert_array_equal(np.load(path), good)  # the damaged file was replaced
    assert [p.name for p in cache.iterdir()] == [path.name]  # and no temporary file is left
