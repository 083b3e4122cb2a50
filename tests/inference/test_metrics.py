"""Tests for inference.metrics: every expected number is worked out by hand (in a comment) or computed
here another way (numpy's Pearson, the eigenvalue form of CCA), never read back from the code under test.

No database and no files beyond a temporary CSV; the whole file runs in a few seconds (librosa's first
onset detection in a fresh environment compiles with numba once).
"""
import math

import numpy as np
import pytest

from inference.layouts import (
    IBUG68_INNER_LIP, IBUG68_JAW, IBUG68_LEFT_EYE, IBUG68_LIPS_AND_JAW, IBUG68_RIGHT_EYE, IBUG68_UPPER_FACE,
)
from inference.metrics import (
    MetricInputError,
    MetricsTable,
    audio_onsets,
    beat_alignment,
    cca_first,
    ccc,
    diversity,
    kinematic_beats,
    landmark_errors,
    lip_vertex_error,
    mean_area_error,
    mean_landmark_distance,
    mean_velocity_distance,
    mse,
    per_region,
    polygon_area,
    rmse,
    upper_face_dynamics_deviation,
)


def pearson(x, y):
    return np.corrcoef(x, y)[0, 1]


# --- CCC, MSE, RMSE -----------------------------------------------------------------------------------

def test_ccc_of_a_series_with_itself_is_one():
    x = np.random.default_rng(0).normal(size=(50, 4))
    np.testing.assert_allclose(ccc(x, x), np.ones(4))


def test_ccc_hand_worked_example():
    # x = [0, 1, 2, 3]: mean 1.5, var (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25
    # y = [1, 1, 3, 3]: mean 2,   var (1 + 1 + 1 + 1) / 4 = 1
    # cov = ((-1.5)(-1) + (-0.5)(-1) + (0.5)(1) + (1.5)(1)) / 4 = 1
    # CCC = 2 * 1 / (1.25 + 1 + (1.5 - 2)^2) = 2 / 2.5 = 0.8; Pearson = 1 / sqrt(1.25) ≈ 0.894
    x, y = [0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 3.0, 3.0]
    assert ccc(x, y) == pytest.approx(0.8)
    assert pearson(x, y) == pytest.approx(1 / math.sqrt(1.25))


def test_ccc_differs_from_pearson_under_an_offset():
    # y = x + 1 with x = [0, 1, 2, 3]: var 1.25 each, cov 1.25, CCC = 2.5 / (2.5 + 1) = 5/7
    x = np.array([0.0, 1.0, 2.0, 3.0])
    assert pearson(x, x + 1) == pytest.approx(1.0)
    assert ccc(x, x + 1) == pytest.approx(5 / 7)


def test_ccc_falls_monotonically_as_an_offset_grows():
    x = np.sin(np.linspace(0, 6, 100))
    values = [ccc(x, x + offset) for offset in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)]
    assert values[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("scales", [(1.0, 1.5, 2.0, 4.0), (1.0, 0.75, 0.5, 0.25)])
def test_ccc_falls_monotonically_as_y_is_scaled_away_from_x(scales):
    x = np.sin(np.linspace(0, 2 * np.pi, 200, endpoint=False))  # mean 0, so CCC(x, s x) = 2s / (1 + s^2)
    values = [ccc(x, s * x) for s in scales]
    np.testing.assert_allclose(values, [2 * s / (1 + s * s) for s in scales])
    assert all(a > b for a, b in zip(values, values[1:]))


def test_ccc_is_per_channel_and_defined_for_constant_series():
    x = np.array([[0.1, 0.1, 0.1, 0.0], [0.1, 0.1, 0.1, 1.0], [0.1, 0.1, 0.1, 2.0]])
    y = np.array([[0.1, 0.2, 0.0, 5.0], [0.1, 0.2, 1.0, 5.0], [0.1, 0.2, 2.0, 5.0]])
    # equal constants → 1; different constants → 0; one side constant → 0 (both ways round)
    np.testing.assert_array_equal(ccc(x, y), [1.0, 0.0, 0.0, 0.0])
    assert ccc(y.T, x.T, axis=1).shape == (4,)


def test_mse_and_rmse_hand_worked():
    # errors 1, 0, 4 → squared 1, 0, 16 → MSE 17/3; second channel errors 0, 0, 0
    x = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    y = np.array([[2.0, 5.0], [2.0, 5.0], [7.0, 5.0]])
    np.testing.assert_allclose(mse(x, y), [17 / 3, 0.0])
    np.testing.assert_allclose(rmse(x, y), [math.sqrt(17 / 3), 0.0])
    assert rmse([0.0, 0.0], [3.0, 4.0]) == pytest.approx(math.sqrt(12.5))  # (9 + 16) / 2


def test_per_region_averages_channels():
    regions = {"upper": [0, 1], "lower": [2, 3], "all": [0, 1, 2, 3]}
    assert per_region([1.0, 2.0, 3.0, 4.0], regions) == {"upper": 1.5, "lower": 3.5, "all": 2.5}
    with pytest.raises(MetricInputError, match="out of range"):
        per_region([1.0, 2.0], {"upper": [0, 2]})


@pytest.mark.parametrize("x, y, message", [
    ([[1.0, np.nan]], [[1.0, 2.0]], "NaN"),
    ([[1.0, np.inf]], [[1.0, 2.0]], "infinite"),
    (np.zeros((4, 2)), np.zeros((4, 3)), "same shape"),
    ("abc", "abc", "array of numbers"),
])
def test_agreement_metrics_reject_bad_input(x, y, message):
    with pytest.raises(MetricInputError, match=message):
        ccc(x, y)


# --- CCA ----------------------------------------------------------------------------------------------

def correlated_pair(rng, t=2000):
    x = rng.normal(size=(t, 3))
    y = x @ rng.normal(size=(3, 2)) + 2.0 * rng.normal(size=(t, 2))
    return x, y


def first_canonical_correlation_by_eigenvalues(x, y):
    """Textbook form: rho^2 is the top eigenvalue of Sxx^-1 Sxy Syy^-1 Syx."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    sxx, syy, sxy = xc.T @ xc, yc.T @ yc, xc.T @ yc
    m = np.linalg.solve(sxx, sxy) @ np.linalg.solve(syy, sxy.T)
    return math.sqrt(max(np.linalg.eigvals(m).real))


def test_cca_matches_the_eigenvalue_form():
    x, y = correlated_pair(np.random.default_rng(1))
    assert cca_first(x, y) == pytest.approx(first_canonical_correlation_by_eigenvalues(x, y), rel=1e-5)


def test_cca_is_invariant_to_invertible_linear_maps_of_either_side():
    rng = np.random.default_rng(2)
    x, y = correlated_pair(rng)
    before = cca_first(x, y)
    for _ in range(5):
        a, b = rng.normal(size=(3, 3)), rng.normal(size=(2, 2))
        assert abs(np.linalg.det(a)) > 1e-3 and abs(np.linalg.det(b)) > 1e-3
        assert cca_first(x @ a + 7.0, y @ b - 3.0) == pytest.approx(before, rel=1e-4)
    assert cca_first(x * [1e-4, 1.0, 1e4], y) == pytest.approx(before, rel=1e-9)  # channel scale is exact


def test_cca_of_one_channel_each_is_absolute_pearson():
    rng = np.random.default_rng(3)
    x = rng.normal(size=500)
    y = -0.6 * x + rng.normal(size=500)
    assert cca_first(x, y) == pytest.approx(abs(pearson(x, y)), rel=1e-5)


def test_cca_is_one_for_a_linear_map_even_with_collinear_channels():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 3))
    assert cca_first(x, x @ rng.normal(size=(3, 3))) == pytest.approx(1.0, abs=1e-4)
    # four channels spanning only three directions: the ridge keeps the whitening finite
    assert cca_first(x, x @ rng.normal(size=(3, 4))) == pytest.approx(1.0, abs=1e-4)


def test_cca_is_near_zero_for_independent_noise():
    rng = np.random.default_rng(5)
    assert cca_first(rng.normal(size=(20000, 3)), rng.normal(size=(20000, 3))) < 0.05


def test_cca_with_a_still_side_is_zero_and_bad_input_is_refused():
    x = np.random.default_rng(6).normal(size=(50, 2))
    assert cca_first(x, np.ones((50, 6))) == 0.0
    with pytest.raises(MetricInputError, match="same number of frames"):
        cca_first(x, x[:-1])
    with pytest.raises(MetricInputError, match="reg"):
        cca_first(x, x, reg=0.0)


# --- polygon areas ------------------------------------------------------------------------------------

HEXAGON = [(math.cos(k * math.pi / 3), math.sin(k * math.pi / 3)) for k in range(6)]


@pytest.mark.parametrize("points, area", [
    ([(0, 0), (1, 0), (1, 1), (0, 1)], 1.0),   # unit square
    ([(0, 0), (3, 0), (0, 4)], 6.0),           # 3-4-5 right triangle: 3 * 4 / 2
    ([(0, 0), (0, 4), (3, 0)], 6.0),           # the same, clockwise
    (HEXAGON, 3 * math.sqrt(3) / 2),           # regular hexagon of side 1: six unit equilateral triangles
])
def test_polygon_area(points, area):
    assert polygon_area(np.array(points, dtype=float)) == pytest.approx(area)


def test_polygon_area_is_batched():
    square = np.array([(0, 0), (1, 0), (1, 1), (0, 1)], dtype=float)
    batch = np.stack([np.stack([square * k, square * k + 5]) for k in (1, 2, 3)])  # [3, 2, 4, 2]
    np.testing.assert_allclose(polygon_area(batch), [[1, 1], [4, 4], [9, 9]])
    with pytest.raises(MetricInputError, match=r"\[\.\.\., K, 2\]"):
        polygon_area(np.zeros((5, 4, 3)))
    with pytest.raises(MetricInputError, match="K ≥ 3"):
        polygon_area(np.zeros((5, 2, 2)))


# --- landmark errors ----------------------------------------------------------------------------------

# An open eye: shoelace by hand = rectangle [1, 2] x [-1, 1] (area 2) + two triangles of area 1 = 4.
OPEN_EYE = [(0, 0), (1, 1), (2, 1), (3, 0), (2, -1), (1, -1)]
# An open mouth (inner lip, corner → upper lip → corner → lower lip): rectangle [1, 3] x [-1, 1] (4) + 2 = 6.
OPEN_MOUTH = [(0, 0), (1, 1), (2, 1), (3, 1), (4, 0), (3, -1), (2, -1), (1, -1)]


def face(frames=6, seed=0):
    """[T, 68, 3] landmarks: random points, with the eyes and the inner lip drawn open at fixed places."""
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(frames, 68, 3))
    for idx, shape, offset in ((IBUG68_RIGHT_EYE, OPEN_EYE, (-5, 5)), (IBUG68_LEFT_EYE, OPEN_EYE, (5, 5)),
                               (IBUG68_INNER_LIP, OPEN_MOUTH, (0, -5))):
        points[:, idx, :2] = np.array(shape, dtype=float) + offset
    return points


def closed(points, idx):
    """The same landmarks with the polygon idx squashed flat onto its middle line (area 0)."""
    out = points.copy()
    out[:, idx, 1] = out[:, idx, 1].mean(axis=1, keepdims=True)
    return out


def test_translating_every_landmark_moves_positions_by_its_length_and_velocities_not_at_all():
    true = face()
    pred = true + np.array([3.0, 4.0, 12.0])  # |(3, 4, 12)| = 13
    errors = landmark_errors(pred, true, fps=25)
    assert errors["D-P"] == pytest.approx(13.0)
    assert errors["D-PL"] == pytest.approx(13.0)
    assert errors["D-V"] == pytest.approx(0.0, abs=1e-12)
    assert errors["D-VL"] == pytest.approx(0.0, abs=1e-12)
    assert errors["D-AL"] == pytest.approx(0.0, abs=1e-12)
    assert errors["D-AE"] == pytest.approx(0.0, abs=1e-12)


def test_velocity_error_per_frame_and_per_second():
    true = face(frames=5)
    drift = np.arange(5)[:, None, None] * np.array([0.0, 0.3, 0.4])  # each frame 0.5 further away
    assert mean_velocity_distance(true + drift, true) == pytest.approx(0.5)
    assert mean_velocity_distance(true + drift, true, fps=30) == pytest.approx(15.0)


def test_moving_only_the_jaw_leaves_the_mouth_area_alone():
    true = face()
    pred = true.copy()
    pred[:, IBUG68_JAW] += [0.0, 6.0, 8.0]  # |v| = 10, on 17 of 68 points, 17 of the 37 lips-and-jaw points
    assert mean_area_error(pred, true, [IBUG68_INNER_LIP]) == 0.0
    assert mean_landmark_distance(pred, true) == pytest.approx(10 * 17 / 68)
    assert mean_landmark_distance(pred, true, IBUG68_LIPS_AND_JAW) == pytest.approx(10 * 17 / 37)


def test_mouth_and_eye_area_errors_for_closed_versus_open():
    true = face()
    assert polygon_area(true[0, IBUG68_RIGHT_EYE, :2]) == pytest.approx(4.0)
    assert polygon_area(true[0, IBUG68_INNER_LIP, :2]) == pytest.approx(6.0)
    errors = landmark_errors(closed(closed(true, IBUG68_RIGHT_EYE), IBUG68_INNER_LIP), true)
    assert errors["D-AE"] == pytest.approx(2.0)  # right eye 4 − 0, left eye 0: mean over the eyes
    assert errors["D-AL"] == pytest.approx(6.0)


def test_landmark_errors_refuse_bad_landmarks():
    with pytest.raises(MetricInputError, match=r"\[T, N, 2\] or \[T, N, 3\]"):
        mean_landmark_distance(np.zeros((3, 68, 4)), np.zeros((3, 68, 4)))
    with pytest.raises(MetricInputError, match="index 50, out of range for 50"):
        landmark_errors(np.zeros((3, 50, 3)), np.zeros((3, 50, 3)))
    with pytest.raises(MetricInputError, match="at least 2 frame"):
        mean_velocity_distance(np.zeros((1, 68, 3)), np.zeros((1, 68, 3)))


def test_lip_vertex_error_takes_the_worst_lip_point_per_frame():
    true = np.zeros((2, 68, 3))
    pred = true.copy()
    pred[0, 50] = [3.0, 4.0, 0.0]   # 5 away (outer lip)
    pred[0, 60] = [1.0, 0.0, 0.0]   # 1 away (inner lip), not the worst
    pred[1, 55] = [0.0, 0.0, 2.0]   # 2 away
    pred[1, 10] = [100.0, 0.0, 0.0]  # jaw: not a lip point
    assert lip_vertex_error(pred, true) == pytest.approx((5 + 2) / 2)
    assert lip_vertex_error(pred, true, squared=True) == pytest.approx((25 + 4) / 2)


def test_upper_face_dynamics_deviation():
    true = np.zeros((4, 68, 3))
    true[:, IBUG68_UPPER_FACE, 0] = np.arange(4.0)[:, None]  # every upper-face point moves x = 0, 1, 2, 3
    still = np.zeros_like(true)
    still[:, IBUG68_JAW, 2] = np.arange(4.0)[:, None] * 9  # lower-face motion is not counted
    assert upper_face_dynamics_deviation(true, true) == 0.0
    # from the mean frame (x = 1.5) the displacements are 1.5, 0.5, 0.5, 1.5: std 0.5; a still face has 0
    assert upper_face_dynamics_deviation(still, true) == pytest.approx(-0.5)
    assert upper_face_dynamics_deviation(true, still) == pytest.approx(0.5)
    # from the first frame they are 0, 1, 2, 3: std sqrt(1.25)
    assert upper_face_dynamics_deviation(still, true, reference="first") == pytest.approx(-math.sqrt(1.25))


# --- beats and diversity ------------------------------------------------------------------------------

def nodding(fps=50, seconds=4.0):
    """Head pitch and yaw swinging together at 1 Hz: speed ∝ |sin 2πt|, zero every half second."""
    t = np.arange(int(fps * seconds)) / fps
    swing = np.cos(2 * np.pi * t)
    return np.stack([5 * swing, 2 * swing, np.zeros_like(t)], axis=1)


def test_kinematic_beats_are_the_still_moments():
    np.testing.assert_allclose(kinematic_beats(nodding(), fps=50), [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5])


def test_beat_alignment_is_one_on_the_onsets_and_lower_when_shifted():
    onsets = np.array([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5])
    assert beat_alignment(nodding(), onsets, fps=50, sigma=0.1) == pytest.approx(1.0)
    # every beat 0.1 s from its nearest onset: exp(−0.1² / (2 · 0.1²)) = exp(−0.5)
    assert beat_alignment(nodding(), onsets + 0.1, fps=50, sigma=0.1) == pytest.approx(math.exp(-0.5))
    assert beat_alignment(np.zeros((100, 3)), onsets, fps=50) == 0.0  # a still head has no beats
    assert beat_alignment(nodding(), [], fps=50) == 0.0
    with pytest.raises(MetricInputError, match="fps"):
        beat_alignment(nodding(), onsets, fps=0)


def test_audio_onsets_finds_clicks():
    sr = 22050
    samples = np.zeros(2 * sr, dtype=np.float32)
    burst = np.random.default_rng(7).normal(0, 0.5, sr // 20) * np.exp(-np.linspace(0, 8, sr // 20))
    for at in (0.5, 1.0, 1.5):
        samples[int(at * sr):int(at * sr) + burst.size] = burst
    found = audio_onsets(samples, sr)
    assert found.shape == (3,)
    np.testing.assert_allclose(found, [0.5, 1.0, 1.5], atol=0.05)  # within about two 512-sample hops


def test_diversity():
    rng = np.random.default_rng(8)
    one = rng.normal(size=(10, 4))
    assert diversity(np.stack([one, one, one])) == 0.0
    # constant samples at (0, 0), (3, 4) and (6, 8): pairwise distances 5, 10, 5 → mean 20 / 3
    samples = np.broadcast_to(np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])[:, None, :], (3, 10, 2))
    assert diversity(samples[:2]) == pytest.approx(5.0)
    assert diversity(samples) == pytest.approx(20 / 3)
    with pytest.raises(MetricInputError, match="at least 2 samples"):
        diversity(samples[:1])


# --- the results table --------------------------------------------------------------------------------

def filled_table():
    table = MetricsTable()
    table.add_metrics(model="joint BLSTM", region="upper", metrics={"CCC": 1 / 3, "RMSE": 12345.678},
                      n_utterances=40)
    table.add_metrics(model="joint BLSTM", region="lower", metrics={"CCC": -0.25, "RMSE": 1e-12},
                      n_utterances=40)
    table.add(model='glow, "T=0.7"', region="head", metric="CCA", value=0.123456789, n_utterances=38)
    return table


def test_metrics_table_round_trips_through_csv(tmp_path):
    table = filled_table()
    table.to_csv(tmp_path / "metrics.csv")
    assert MetricsTable.from_csv(tmp_path / "metrics.csv").rows == table.rows
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_metrics_table_markdown():
    lines = filled_table().to_markdown().splitlines()
    assert lines[0] == "| model | region | utterances | CCC | RMSE | CCA |"
    assert set(lines[1]) <= set("|-:")
    assert "| joint BLSTM | upper | 40 | 0.3333 | 1.235e+04 | – |" in lines
    assert any(line.startswith('| glow, "T=0.7" | head | 38 |') for line in lines)
    assert len(lines) == 2 + 3


def test_metrics_table_refuses_duplicates_and_non_numbers(tmp_path):
    table = filled_table()
    with pytest.raises(MetricInputError, match="already in the table"):
        table.add(model="joint BLSTM", region="upper", metric="CCC", value=0.5, n_utterances=40)
    with pytest.raises(MetricInputError, match="finite number"):
        table.add(model="m", region="r", metric="CCC", value=float("nan"), n_utterances=1)
    (tmp_path / "bad.csv").write_text("model,region,metric,value,n_utterances\nm,r,CCC,abc,3\n")
    with pytest.raises(MetricInputError, match="line 2"):
        MetricsTable.from_csv(tmp_path / "bad.csv")
