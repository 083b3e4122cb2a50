"""The motion clip format: files, validation, time operations, regions, retargeting and PCA."""
import numpy as np
import pytest

from inference.layouts import ARKIT52, OPENFACE_AUS
from inference.motion import (
    MotionClip, MotionError, fit_length, fit_pca, from_pca, resample, retarget, smooth, time_shift, to_pca,
)


def arkit_clip(T=50, fps=25.0, seed=0, head=True):
    rng = np.random.default_rng(seed)
    return MotionClip(fps=fps, layout="arkit52", values=rng.random((T, 52)),
                      head_pose=rng.normal(size=(T, 6)) if head else None, metadata={"source": "test", "seed": seed})


def test_save_and_load_round_trip_everything(tmp_path):
    clip = arkit_clip()
    path = clip.save(tmp_path / "clip.npz")
    back = MotionClip.load(path)
    assert back.fps == 25.0 and back.layout == "arkit52" and back.channels == ARKIT52
    np.testing.assert_array_equal(back.values, clip.values)
    np.testing.assert_array_equal(back.head_pose, clip.head_pose)
    assert back.metadata == {"source": "test", "seed": 0}
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_the_same_clip_saved_at_other_times_on_other_systems_gives_the_same_bytes(tmp_path, monkeypatch):
    """A rebuilt corpus or a regenerated clip must hash the same: zip stamps each entry with a date and the
    writing system (numpy's savez leaves both to zipfile: the system it runs on, and a date only CPython's
    current default keeps fixed)."""
    import sys
    import time
    import zipfile

    clips = [arkit_clip(seed=s) for s in range(3)]
    pc = to_pca(clips[0], fit_pca(clips, k=5))  # every kind of entry: values, head pose, basis, metadata
    monkeypatch.setattr(time, "time", lambda: 1_000_000_000.0)  # 2001, on Linux
    first = pc.save(tmp_path / "first.npz").read_bytes()
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)  # 2023, on Windows
    monkeypatch.setattr(sys, "platform", "win32")
    second = pc.save(tmp_path / "second.npz").read_bytes()
    monkeypatch.undo()
    assert first == second
    with zipfile.ZipFile(tmp_path / "second.npz") as archive:  # still the .npz numpy writes and reads
        entries = archive.infolist()
        assert [e.filename for e in entries] == sorted(e.filename for e in entries)
        assert {e.date_time for e in entries} == {(1980, 1, 1, 0, 0, 0)}
        assert {e.compress_type for e in entries} == {zipfile.ZIP_DEFLATED}
    with np.load(tmp_path / "second.npz", allow_pickle=False) as data:
        np.testing.assert_array_equal(data["values"], pc.values)
    back = MotionClip.load(tmp_path / "second.npz")
    assert back.metadata == pc.metadata and back.basis.k == 5
    np.testing.assert_array_equal(back.head_pose, pc.head_pose)


def test_pca_clip_carries_its_basis_through_a_file(tmp_path):
    clips = [arkit_clip(seed=s) for s in range(3)]
    basis = fit_pca(clips, k=5)
    pc = to_pca(clips[0], basis)
    back = MotionClip.load(pc.save(tmp_path / "pc.npz"))
    assert back.layout == "pca" and back.basis.k == 5 and back.channels == ("pc1", "pc2", "pc3", "pc4", "pc5")
    np.testing.assert_allclose(from_pca(back).values, from_pca(pc).values, atol=1e-6)


@pytest.mark.parametrize("bad, message", [
    (dict(values=np.full((4, 52), np.nan)), "NaN/inf"),
    (dict(fps=0), "positive"),
    (dict(layout="blendshapes"), "unknown motion layout"),
    (dict(values=np.zeros((4, 51))), "columns"),
    (dict(head_pose=np.zeros((4, 5))), "head pose"),
])
def test_malformed_clips_are_refused_with_the_reason(bad, message):
    args = dict(fps=25, layout="arkit52", values=np.zeros((4, 52)))
    args.update(bad)
    with pytest.raises(MotionError, match=message):
        MotionClip(**args)


def test_nan_error_names_the_frame_and_column():
    values = np.zeros((10, 52))
    values[7, 3] = np.inf
    with pytest.raises(MotionError, match="frame 7, column 3"):
        MotionClip(fps=25, layout="arkit52", values=values)


def test_length_must_match_the_audio_within_one_frame(tmp_path):
    clip = arkit_clip(T=100)  # 4.00 s at 25 fps
    path = clip.save(tmp_path / "c.npz")
    MotionClip.load(path, audio_duration_s=4.03)   # within one frame (40 ms)
    with pytest.raises(MotionError, match="within one frame"):
        MotionClip.load(path, audio_duration_s=4.1)


def test_a_file_that_is_not_a_clip_is_refused(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    for name in ("other.npz", "junk.npz"):
        with pytest.raises(MotionError, match=name):
            MotionClip.load(tmp_path / name)


def test_regions_follow_the_layout():
    clip = arkit_clip()
    upper = [ARKIT52[i] for i in clip.region_indices("upper")]
    lower = [ARKIT52[i] for i in clip.region_indices("lower")]
    assert "browInnerUp" in upper and "eyeBlinkLeft" in upper and "jawOpen" not in upper
    assert "jawOpen" in lower and "mouthSmileLeft" in lower
    assert clip.region("head").shape == (50, 6)
    assert clip.regions() == ["upper", "middle", "lower", "head"]
    motors = MotionClip(fps=25, layout="motors:furhat", values=np.zeros((3, 3)),
                        channels=["upper.brow", "lower.jaw", "head.pan"])
    assert motors.region("lower").shape == (3, 1)


def test_resample_keeps_a_slow_sine_and_the_duration():
    fps = 60.0
    t = (np.arange(240) + 0.5) / fps  # 4 s
    clip = MotionClip(fps=fps, layout="openface_au", values=np.tile(np.sin(2 * np.pi * 0.5 * t)[:, None], (1, 17)))
    out = resample(clip, 25.0)
    assert out.n_frames == 100
    expected = np.sin(2 * np.pi * 0.5 * (np.arange(100) + 0.5) / 25.0)
    np.testing.assert_allclose(out.values[:, 0], expected, atol=2e-3)
    assert resample(clip, 25.0, n_frames=101).n_frames == 101


def test_smoothing_removes_jitter_without_moving_a_peak():
    T = 200
    rng = np.random.default_rng(1)
    bump = np.exp(-0.5 * ((np.arange(T) - 120) / 6.0) ** 2)
    values = np.tile(bump[:, None], (1, 52)) + 0.05 * rng.normal(size=(T, 52))
    out = smooth(MotionClip(fps=25, layout="arkit52", values=values), cutoff_hz=1.5)
    noisy_error = np.sqrt(np.mean((values[:, 0] - bump) ** 2))
    assert np.sqrt(np.mean((out.values[:, 0] - bump) ** 2)) < 0.5 * noisy_error
    assert abs(int(out.values[:, 0].argmax()) - 120) <= 1   # zero phase: no delay


def test_fit_length_mirrors_without_a_jump_and_loops_on_request():
    ramp = MotionClip(fps=25, layout="arkit52", values=np.tile(np.linspace(0, 1, 10)[:, None], (1, 52)))
    mirrored = fit_length(ramp, 25).values[:, 0]
    assert np.abs(np.diff(mirrored)).max() <= 1 / 9 + 1e-6  # never jumps more than one step
    looped = fit_length(ramp, 12, mode="loop").values[:, 0]
    assert looped[10] == pytest.approx(0.0) and looped[11] == pytest.approx(1 / 9)
    assert fit_length(ramp, 4, start=3).values[0, 0] == pytest.approx(3 / 9)


def test_time_shift_delays_motion_by_whole_frames():
    impulse = np.zeros((50, 52))
    impulse[10] = 1
    shifted = time_shift(MotionClip(fps=25, layout="arkit52", values=impulse), 200)  # 5 frames
    assert int(shifted.values[:, 0].argmax()) == 15 and shifted.n_frames == 50


def test_openface_to_arkit_follows_the_documented_mapping():
    values = np.zeros((2, 17))
    values[0, OPENFACE_AUS.index("AU12")] = 2.5   # lip corner puller at half intensity
    values[1, OPENFACE_AUS.index("AU26")] = 5.0   # full jaw drop
    values[1, OPENFACE_AUS.index("AU45")] = 10.0  # beyond the scale: clipped
    arkit = retarget(MotionClip(fps=30, layout="openface_au", values=values), "arkit52")
    assert arkit.layout == "arkit52"
    row0 = dict(zip(ARKIT52, arkit.values[0]))
    row1 = dict(zip(ARKIT52, arkit.values[1]))
    assert row0["mouthSmileLeft"] == pytest.approx(0.5) and row0["mouthSmileRight"] == pytest.approx(0.5)
    assert row0["jawOpen"] == 0 and row1["jawOpen"] == pytest.approx(1.0) and row1["eyeBlinkLeft"] == 1.0


def test_unknown_retargeting_says_which_exist():
    with pytest.raises(MotionError, match="openface_au → arkit52"):
        retarget(arkit_clip(), "openface_au")


def test_pca_retains_the_stated_variance_and_full_rank_is_lossless():
    rng = np.random.default_rng(3)
    latent = rng.normal(size=(400, 3)) * [5.0, 2.0, 0.5]
    mixing = rng.normal(size=(3, 52))
    values = latent @ mixing + 0.01 * rng.normal(size=(400, 52))
    clip = MotionClip(fps=25, layout="arkit52", values=values)
    basis = fit_pca([clip], variance=0.95)
    # Independent check: the variance retained, from numpy's own covariance eigenvalues.
    eig = np.sort(np.linalg.eigvalsh(np.cov(values.T)))[::-1]
    needed = int(np.searchsorted(np.cumsum(eig) / eig.sum(), 0.95) + 1)
    assert basis.k == needed
    assert float(basis.explained_variance_ratio.sum()) >= 0.95
    full = fit_pca([clip], k=52)
    np.testing.assert_allclose(from_pca(to_pca(clip, full)).values, clip.values, atol=1e-3)
    np.testing.assert_allclose(full.components @ full.components.T, np.eye(52), atol=1e-4)


def test_landmarks_retarget_back_to_the_blendshapes_that_made_them_under_head_motion_and_scale():
    from inference.face_geometry import apply_head_pose

    rng = np.random.default_rng(4)
    weights = np.zeros((60, 52), np.float32)
    moving = ["jawOpen", "mouthSmileLeft", "browInnerUp", "eyeBlinkRight", "mouthPucker"]
    for name in moving:
        weights[40:, ARKIT52.index(name)] = rng.uniform(0, 1, 20)   # most frames rest: the reference
    landmarks = retarget(MotionClip(fps=25, layout="arkit52", values=weights), "landmarks:ibug68").landmarks()
    pose = np.zeros((60, 6))
    pose[:, 1] = np.linspace(-20, 20, 60)            # the tracked head turns...
    tracked = apply_head_pose(landmarks, pose) * 1.15 + 7.0   # ...and the tracked face is larger and elsewhere
    clip = MotionClip(fps=25, layout="landmarks:ibug68", values=tracked.reshape(60, -1))
    back = retarget(clip, "arkit52")
    np.testing.assert_allclose(back.values, weights, atol=1e-3)
    assert back.metadata["retargeted_from"] == "landmarks:ibug68"
