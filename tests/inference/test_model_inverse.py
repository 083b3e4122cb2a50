"""The robot inverse model (landmarks → motor commands) and the robot profiles it reads.

Training data come from a fake robot written here: each face actuator moves its own group of landmarks
along fixed directions by a monotone, nonlinear amount of its command; the neck turns the whole face (in
the camera's frame, as a tracker sees it); landmarks carry 0.2 mm of Gaussian tracking noise. One model is
trained on it per module and reused; the rest call the modules directly.
"""
from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from inference.features import Normalizer
from inference.models import recipe
from inference.models.inverse import (RECIPE, RIGID_POINTS, Config, apply_inverse, build, fit_inverse,
                                      inverse_space, landmark_inputs, motor_clip, rigid_align, robot_for, stages)
from inference.motion import MotionClip, MotionError
from inference.robots import SIM_FACE, ActuatorSpec, RobotError, RobotProfile, robot_profile
from inference.training import CorpusItem, load_checkpoint, train

CHANNELS = SIM_FACE.channels  # 9 face actuators, then head.pan (±25°) and head.tilt (±15°)
FACE = [i for i, c in enumerate(CHANNELS) if not c.startswith("head.")]
HAS_FACE_GEOMETRY = importlib.util.find_spec("inference.face_geometry") is not None
HAS_SYNTHETIC = importlib.util.find_spec("inference.synthetic") is not None


# --- a fake robot --------------------------------------------------------------------------------------

_rng = np.random.default_rng(1234)
NEUTRAL = _rng.normal(0.0, 30.0, (68, 3)).astype(np.float32)
GROUPS = {  # the points each face actuator moves; none of them is a rigid point
    "upper.brow_left": (22, 23, 24, 25, 26), "upper.brow_right": (17, 18, 19, 20, 21),
    "upper.eyelid_left": (43, 44, 46, 47), "upper.eyelid_right": (37, 38, 40, 41),
    "lower.jaw": (5, 6, 7, 8, 9, 10, 11, 57, 66), "lower.lip_corner_left": (54, 64, 53),
    "lower.lip_corner_right": (48, 60, 49), "lower.upper_lip": (50, 51, 52, 61, 62, 63),
    "lower.lower_lip": (55, 56, 58, 59, 65, 67),
}
FIELDS = {}
for _name, _points in GROUPS.items():
    _field = np.zeros((68, 3), np.float32)
    _directions = _rng.normal(size=(len(_points), 3))
    _field[list(_points)] = 8.0 * _directions / np.linalg.norm(_directions, axis=1, keepdims=True)  # 8 mm at full
    FIELDS[_name] = _field
assert not set(RIGID_POINTS) & {p for g in GROUPS.values() for p in g}


def _rotation(pitch_deg, yaw_deg):
    a, b = math.radians(pitch_deg), math.radians(yaw_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    return ry @ rx


def fake_landmarks(commands: np.ndarray, *, noise_mm: float = 0.2, seed: int = 0, turn_head: bool = True):
    """Landmarks [n, 68, 3] of the fake robot under commands [n, 11]."""
    rng = np.random.default_rng(seed)
    out = np.repeat(NEUTRAL[None].astype(np.float64), len(commands), axis=0)
    for i, name in enumerate(CHANNELS):
        if name in FIELDS:
            c = commands[:, i].astype(np.float64)
            if "lip_corner" in name:  # centred at 0.5: down below, up above
                amount = np.sign(2 * c - 1) * np.abs(2 * c - 1) ** 1.3
            else:
                amount = c ** 1.4
            out += amount[:, None, None] * FIELDS[name][None]
    if turn_head:
        pan, tilt = CHANNELS.index("head.pan"), CHANNELS.index("head.tilt")
        pivot = np.array([0.0, -60.0, -80.0])
        for t, row in enumerate(commands):
            rot = _rotation(30 * (row[tilt] - 0.5), 50 * (row[pan] - 0.5))
            out[t] = (out[t] - pivot) @ rot.T + pivot
    out += rng.normal(0.0, noise_mm, out.shape)
    return out.astype(np.float32)


def fake_pairs(n: int, seed: int):
    commands = np.random.default_rng(seed).uniform(0, 1, (n, len(CHANNELS))).astype(np.float32)
    return commands, fake_landmarks(commands, seed=seed + 1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One model at the default config on 2000 fake pairs (≈ 5–10 s on one core)."""
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("inverse") / "inverse.pt"
    commands, landmarks = fake_pairs(2000, seed=0)
    model = fit_inverse(commands, landmarks, CHANNELS, path, robot="sim-face")
    return model, path


def _landmark_clip(landmarks, head_pose=None, fps=25.0):
    return MotionClip(fps=fps, layout="landmarks:ibug68", values=np.asarray(landmarks).reshape(len(landmarks), -1),
                      head_pose=head_pose)


# --- learning ------------------------------------------------------------------------------------------


def test_recovers_commands_from_held_out_landmarks(trained):
    model, _ = trained
    commands, landmarks = fake_pairs(400, seed=99)  # pairs the model never saw
    out = apply_inverse(model, _landmark_clip(landmarks))
    error = np.abs(out.values[:, FACE] - commands[:, FACE])
    # Bound: 0.05 command units on average (5 % of an actuator's travel), no actuator worse than 0.08.
    assert error.mean() < 0.05, error.mean(axis=0)
    assert error.mean(axis=0).max() < 0.08, error.mean(axis=0)
    # A constant guess (the mean command, 0.5) would be off by 0.25 on uniform commands: the model learnt.
    assert np.abs(0.5 - commands[:, FACE]).mean() > 0.2


def test_head_turning_in_camera_frame_does_not_change_face_commands(trained):
    model, _ = trained
    commands = np.tile(np.random.default_rng(5).uniform(0, 1, (1, len(CHANNELS))), (3, 1)).astype(np.float32)
    commands[:, CHANNELS.index("head.pan")] = [0.0, 0.5, 1.0]    # −25°, 0°, +25°
    commands[:, CHANNELS.index("head.tilt")] = [1.0, 0.5, 0.0]
    out = apply_inverse(model, _landmark_clip(fake_landmarks(commands, noise_mm=0.0)))
    face = out.values[:, FACE]
    assert np.abs(face - face[1]).max() < 0.01


def test_overfits_a_tiny_batch():
    cfg = Config()
    profile = robot_for("sim-face", CHANNELS)
    commands, landmarks = fake_pairs(32, seed=3)
    space = inverse_space(cfg, profile, landmarks, commands)
    y = commands[:, FACE]
    ynorm = Normalizer.fit([y])
    space.update(target_mean=ynorm.mean, target_std=ynorm.std)
    x = landmark_inputs(landmarks, space)
    xnorm = Normalizer.fit([x])
    batch = {"x": torch.from_numpy(xnorm.apply(x))[None], "y": torch.from_numpy(ynorm.apply(y))[None],
             "lengths": torch.tensor([32]), "mask": torch.ones(1, 32, dtype=torch.bool)}
    torch.manual_seed(0)
    model = build(cfg, x.shape[1], y.shape[1], space)
    loss_fn = stages(cfg)[0].loss
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    start = float(loss_fn(model, batch)[0].detach())
    for _ in range(300):
        loss, _ = loss_fn(model, batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert float(loss.detach()) < 0.05 * start, (start, float(loss.detach()))


def test_loss_is_mean_squared_command_error():
    """The stage's loss reads normalised targets but measures the error in command units."""
    cfg = Config()
    space = {"inputs": np.arange(4), "face": np.arange(2), "lower": np.zeros(2), "upper": np.ones(2),
             "target_mean": np.array([0.5, 0.2], np.float32), "target_std": np.array([0.1, 2.0], np.float32)}
    model = build(cfg, 4, 2, space)
    with torch.no_grad():  # a network that answers 0.7 and 0.4 whatever it sees
        for p in model.parameters():
            p.zero_()
        model.out.bias.copy_(torch.log(torch.tensor([0.7, 0.4]) / torch.tensor([0.3, 0.6])))
    # Targets 0.5 and 0.2 commands are normalised (0.5−0.5)/0.1 = 0 and (0.2−0.2)/2 = 0.
    batch = {"x": torch.randn(1, 3, 4), "y": torch.zeros(1, 3, 2), "lengths": torch.tensor([3]),
             "mask": torch.ones(1, 3, dtype=torch.bool)}
    loss, _ = stages(cfg)[0].loss(model, batch)
    assert float(loss.detach()) == pytest.approx(((0.7 - 0.5) ** 2 + (0.4 - 0.2) ** 2) / 2, rel=1e-5)


# --- shapes, range, determinism ------------------------------------------------------------------------


def _random_model(lower=None, upper=None, in_dim=30, out_dim=9, seed=0):
    torch.manual_seed(seed)
    space = {"inputs": np.arange(in_dim), "face": np.arange(out_dim),
             "lower": np.zeros(out_dim) if lower is None else lower,
             "upper": np.ones(out_dim) if upper is None else upper,
             "target_mean": np.full(out_dim, 0.5, np.float32), "target_std": np.full(out_dim, 0.3, np.float32)}
    return build(Config(), in_dim, out_dim, space).eval()


@pytest.mark.parametrize("T", [1, 7, 161])
def test_predict_keeps_every_length(T):
    model = _random_model()
    out = RECIPE.predict(model, Config(), torch.randn(2, T, 30), torch.tensor([T, T]), seeds=[0, 0])
    assert out.shape == (2, T, 9)
    assert torch.isfinite(out).all()


def test_padded_batch_gives_each_row_what_it_gives_alone():
    model = _random_model()
    lengths = [161, 7, 1]
    xs = [torch.randn(T, 30) for T in lengths]
    batch = torch.full((3, 161, 30), 5.0)  # junk in the padding
    for i, x in enumerate(xs):
        batch[i, :len(x)] = x
    with torch.no_grad():
        together = RECIPE.predict(model, Config(), batch, torch.tensor(lengths), seeds=[0] * 3)
        for i, x in enumerate(xs):
            alone = RECIPE.predict(model, Config(), x[None], torch.tensor([len(x)]), seeds=[0])[0]
            torch.testing.assert_close(together[i, :len(x)], alone)


def test_commands_stay_within_limits_for_any_input():
    lower = np.array([0.0, 0.2, 0.0, 0.1, 0.0, 0.0, 0.3, 0.0, 0.0], np.float32)
    upper = np.array([1.0, 0.7, 1.0, 0.9, 1.0, 0.5, 1.0, 1.0, 1.0], np.float32)
    model = _random_model(lower, upper)
    with torch.no_grad():
        model.out.weight.mul_(100.0)  # a network driven hard into saturation both ways
        x = torch.cat([torch.randn(1, 500, 30) * 1000, torch.randn(1, 500, 30)], dim=1)
        commands = model(x)
    assert (commands >= torch.from_numpy(lower) - 1e-6).all() and (commands <= torch.from_numpy(upper) + 1e-6).all()
    assert commands.min() >= 0 and commands.max() <= 1


def test_outputs_in_unit_range_for_far_away_faces(trained):
    model, _ = trained
    wild = NEUTRAL[None] + np.random.default_rng(0).normal(0, 40.0, (50, 68, 3)).astype(np.float32)
    out = apply_inverse(model, _landmark_clip(wild))
    assert out.values.min() >= 0.0 and out.values.max() <= 1.0


def test_prediction_is_deterministic(trained):
    model, _ = trained
    clip = _landmark_clip(fake_pairs(20, seed=7)[1])
    np.testing.assert_array_equal(apply_inverse(model, clip).values, apply_inverse(model, clip).values)


def test_training_is_deterministic_for_a_seed(tmp_path):
    commands, landmarks = fake_pairs(200, seed=11)
    config = {"train": {"max_epochs": 3}}
    a = fit_inverse(commands, landmarks, CHANNELS, tmp_path / "a.pt", robot="sim-face", config=config, seed=4)
    b = fit_inverse(commands, landmarks, CHANNELS, tmp_path / "b.pt", robot="sim-face", config=config, seed=4)
    for key, value in a.model.state_dict().items():
        torch.testing.assert_close(value, b.model.state_dict()[key], rtol=0, atol=0)


def test_overriding_one_training_knob_keeps_the_models_other_defaults(tmp_path):
    commands, landmarks = fake_pairs(100, seed=12)
    model = fit_inverse(commands, landmarks, CHANNELS, tmp_path / "m.pt", robot="sim-face",
                        config={"train": {"max_epochs": 2}})
    assert model.config.train.max_epochs == 2
    assert model.config.train.crop_frames == Config().train.crop_frames
    assert model.config.train.batch_size == Config().train.batch_size


# --- head channels from head pose ----------------------------------------------------------------------


def test_head_channels_follow_head_pose(trained):
    model, _ = trained
    T = 5
    head = np.zeros((T, 6), np.float32)
    head[:, 1] = [0.0, 15.0, -15.0, 40.0, -25.0]   # yaw
    head[:, 0] = [0.0, 7.5, -15.0, 0.0, 30.0]       # pitch
    landmarks = fake_landmarks(np.tile(np.full((1, len(CHANNELS)), 0.5, np.float32), (T, 1)), turn_head=False)
    out = apply_inverse(model, _landmark_clip(landmarks, head_pose=head))
    pan, tilt = out.values[:, CHANNELS.index("head.pan")], out.values[:, CHANNELS.index("head.tilt")]
    # sim-face: pan = (yaw + 25) / 50, tilt = (pitch + 15) / 30, clamped to 0..1.
    np.testing.assert_allclose(pan, [0.5, 0.8, 0.2, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(tilt, [0.5, 0.75, 0.0, 0.5, 1.0], atol=1e-6)


def test_head_channels_rest_without_head_pose(trained):
    model, _ = trained
    out = apply_inverse(model, _landmark_clip(fake_pairs(4, seed=2)[1]))
    np.testing.assert_array_equal(out.values[:, CHANNELS.index("head.pan")], 0.5)
    np.testing.assert_array_equal(out.values[:, CHANNELS.index("head.tilt")], 0.5)
    assert out.head_pose is None


def test_robot_known_only_by_channel_names_maps_thirty_degrees():
    profile = robot_for("bench-bot", ["lower.jaw", "head.pan", "head.tilt", "head.roll"])
    space = {"profile": profile.to_dict(), "face": np.array([0])}
    head = np.zeros((3, 6), np.float32)
    head[:, 1] = [15.0, -30.0, 45.0]   # yaw → pan
    head[:, 0] = [-15.0, 0.0, 6.0]     # pitch → tilt
    head[:, 2] = [30.0, -7.5, 0.0]     # roll → roll
    clip = motor_clip(space, np.full((3, 1), 0.25, np.float32), 30.0, head)
    assert clip.layout == "motors:bench-bot" and clip.channels == ("lower.jaw", "head.pan", "head.tilt", "head.roll")
    # Default ±30°: command = (angle + 30) / 60.
    np.testing.assert_allclose(clip.values, [[0.25, 0.75, 0.25, 1.0], [0.25, 0.0, 0.5, 0.375],
                                             [0.25, 1.0, 0.6, 0.5]], atol=1e-6)


# --- use on clips --------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 7, 161])
def test_apply_inverse_gives_a_motors_clip_of_equal_length(trained, T):
    model, _ = trained
    clip = _landmark_clip(fake_pairs(T, seed=T)[1], fps=30.0)
    out = apply_inverse(model, clip)
    assert out.layout == "motors:sim-face" and out.channels == CHANNELS
    assert out.n_frames == T and out.fps == 30.0
    assert out.metadata["model"] == "inverse" and out.metadata["input_layout"] == "landmarks:ibug68"
    out.validate()


@pytest.mark.skipif(not HAS_FACE_GEOMETRY, reason="arkit52 → landmarks needs inference/face_geometry.py")
def test_apply_inverse_on_an_arkit_clip(trained):
    from inference.layouts import ARKIT52

    model, _ = trained
    T = 37
    weights = np.zeros((T, len(ARKIT52)), np.float32)
    weights[:, ARKIT52.index("jawOpen")] = np.linspace(0, 1, T)
    weights[:, ARKIT52.index("browInnerUp")] = 0.5
    head = np.zeros((T, 6), np.float32)
    head[:, 1] = np.linspace(-10, 10, T)
    out = apply_inverse(model, MotionClip(fps=25.0, layout="arkit52", values=weights, head_pose=head))
    assert out.layout == "motors:sim-face" and out.n_frames == T and out.fps == 25.0
    assert out.values.min() >= 0.0 and out.values.max() <= 1.0
    assert out.metadata["input_layout"] == "arkit52"
    np.testing.assert_allclose(out.values[:, CHANNELS.index("head.pan")], (head[:, 1] + 25) / 50, atol=1e-6)


@pytest.mark.skipif(not (HAS_FACE_GEOMETRY and HAS_SYNTHETIC), reason="needs inference/synthetic.py (sim-face)")
def test_sim_face_commands_come_back_through_blendshapes(tmp_path):
    """sim-face commands → the blendshapes its servos make → landmarks → the model: the face commands come
    back, and opening the jaw further never closes the robot's jaw."""
    from inference.layouts import ARKIT52
    from inference.synthetic import robot_pairs, sim_face_pose

    commands, landmarks, channels = robot_pairs(1500, seed=0)
    model = fit_inverse(commands, landmarks, channels, tmp_path / "sim.pt", robot="sim-face")
    held_out = robot_pairs(200, seed=1)[0]
    weights, head = sim_face_pose(held_out)
    out = apply_inverse(model, MotionClip(fps=25.0, layout="arkit52", values=weights, head_pose=head))
    face = [i for i, c in enumerate(channels) if not c.startswith("head.")]
    assert np.abs(out.values[:, face] - held_out[:, face]).mean() < 0.06

    ramp = np.zeros((20, len(ARKIT52)), np.float32)
    ramp[:, ARKIT52.index("jawOpen")] = np.linspace(0, 0.85, 20)
    opened = apply_inverse(model, MotionClip(fps=25.0, layout="arkit52", values=ramp))
    jaw = opened.values[:, channels.index("lower.jaw")]
    assert jaw[-1] - jaw[0] > 0.6 and np.all(np.diff(jaw) > -0.02)


def test_apply_inverse_refuses_another_robots_commands(trained):
    model, _ = trained
    other = MotionClip(fps=25.0, layout="motors:other", values=np.zeros((3, 1)), channels=("lower.jaw",))
    with pytest.raises(MotionError, match="another robot"):
        apply_inverse(model, other)


def test_neutral_is_read_off_the_pairs(trained):
    model, _ = trained
    rest = np.tile(SIM_FACE.rest, (1, 1))
    at_rest = fake_landmarks(rest, noise_mm=0.0, turn_head=False)[0]
    # The reference is the robot at its rest commands (up to a rigid motion), not the mean of the pairs.
    aligned = rigid_align(at_rest[None], model.space["reference"])[0]
    assert np.abs(aligned - model.space["reference"]).max() < 0.5
    mean_face = rigid_align(fake_pairs(500, seed=0)[1], model.space["reference"]).mean(axis=0)
    assert np.abs(mean_face - model.space["reference"]).max() > 2.0


def test_displacements_carry_over_to_a_face_of_other_proportions(trained):
    model, _ = trained
    commands = fake_pairs(100, seed=21)[0]
    robot_face = fake_landmarks(commands, noise_mm=0.0, turn_head=False)
    plain = apply_inverse(model, _landmark_clip(robot_face))
    # The same motion on a face whose rest shape differs everywhere by up to ±5 mm.
    other_rest = fake_landmarks(np.tile(SIM_FACE.rest, (1, 1)), noise_mm=0.0, turn_head=False)[0]
    reshape = np.random.default_rng(3).uniform(-5, 5, NEUTRAL.shape).astype(np.float32)
    carried = apply_inverse(model, _landmark_clip(robot_face + reshape), source_neutral=other_rest + reshape)
    naive = apply_inverse(model, _landmark_clip(robot_face + reshape))
    assert np.abs(carried.values - plain.values).mean() < 0.02
    assert np.abs(naive.values - plain.values).mean() > 0.05  # without it, the other face reads as expression


# --- checkpoint ----------------------------------------------------------------------------------------


def test_checkpoint_round_trip(trained):
    model, path = trained
    again = load_checkpoint(path)
    assert again.kind == "inverse" and again.feature_spec is None
    assert again.space["channels"] == list(CHANNELS) and again.space["robot"] == "sim-face"
    np.testing.assert_array_equal(again.space["reference"], model.space["reference"])
    assert RobotProfile.from_dict(again.space["profile"]) == robot_for("sim-face", CHANNELS)
    clip = _landmark_clip(fake_pairs(30, seed=8)[1], head_pose=np.tile([[5.0, 10.0, 0, 0, 0, 0]], (30, 1)))
    np.testing.assert_array_equal(apply_inverse(path, clip).values, apply_inverse(model, clip).values)
    assert apply_inverse(path, clip).metadata["checkpoint_sha256"] == model.sha256


# --- what it refuses -----------------------------------------------------------------------------------


def test_speech_corpus_training_points_to_fit_inverse(tmp_path):
    assert RECIPE.feature_spec(Config()) is None
    with pytest.raises(ValueError, match="fit_inverse"):
        RECIPE.fit_space(Config(), [])
    with pytest.raises(ValueError, match="fit_inverse"):
        RECIPE.targets(Config(), {}, None)
    clip = MotionClip(fps=25.0, layout="landmarks:ibug68", values=np.zeros((10, 204)))
    clip.save(tmp_path / "a.npz")
    items = [CorpusItem("a", "train", str(tmp_path / "a.wav"), str(tmp_path / "a.npz"))]
    with pytest.raises(ValueError, match="fit_inverse"):
        train("inverse", items, tmp_path / "x.pt", cache_dir=tmp_path / "cache")
    assert recipe("inverse") is RECIPE


def test_generate_refuses_an_inverse_model(trained):
    from inference.generate import generate

    model, _ = trained
    with pytest.raises(ValueError, match="does not generate from speech"):
        generate(model, np.zeros(16000, np.float32))


@pytest.mark.parametrize("bad", ["range", "shape", "nan", "head_only"])
def test_bad_pairs_are_refused_with_a_reason(tmp_path, bad):
    commands, landmarks = fake_pairs(50, seed=1)
    channels = list(CHANNELS)
    if bad == "range":
        commands[3, 0] = 1.5
    elif bad == "shape":
        landmarks = landmarks[:-1]
    elif bad == "nan":
        landmarks[2, 5, 1] = np.nan
    else:
        commands, channels = commands[:, -2:], channels[-2:]
    with pytest.raises(ValueError, match={"range": "0..1", "shape": "landmarks must be", "nan": "NaN",
                                          "head_only": "no face actuators"}[bad]):
        fit_inverse(commands, landmarks, channels, tmp_path / "m.pt", robot="sim-face")


# --- geometry and profiles -----------------------------------------------------------------------------


def test_rigid_align_undoes_a_head_turn():
    rot = _rotation(12.0, -20.0)
    moved = (NEUTRAL - NEUTRAL.mean(0)) @ rot.T + np.array([5.0, -3.0, 40.0])
    np.testing.assert_allclose(rigid_align(moved[None], NEUTRAL)[0], NEUTRAL, atol=1e-3)


def test_rigid_align_leaves_expression_in_place():
    face = NEUTRAL + FIELDS["lower.jaw"]  # the rigid points did not move
    np.testing.assert_allclose(rigid_align(face[None], NEUTRAL)[0], face, atol=1e-3)


def test_profile_round_trips_and_maps_degrees():
    assert RobotProfile.from_dict(SIM_FACE.to_dict()) == SIM_FACE
    assert robot_profile("sim-face") is SIM_FACE
    pan = SIM_FACE.actuator("head.pan")
    assert pan.command_from_degrees(15.0) == pytest.approx(0.8)     # (15 + 25) / 50
    assert pan.degrees_from_command(0.8) == pytest.approx(15.0)
    assert pan.command_from_degrees(-90.0) == 0.0
    with pytest.raises(RobotError):
        robot_profile("nobody")
    with pytest.raises(RobotError):
        ActuatorSpec("upper.brow_left", lower=0.6, upper=0.4)
    with pytest.raises(RobotError):
        RobotProfile("twice", (ActuatorSpec("lower.jaw"), ActuatorSpec("lower.jaw")))


@pytest.mark.skipif(not HAS_SYNTHETIC, reason="inference/synthetic.py defines the simulated robot")
def test_sim_face_profile_matches_the_simulated_robot():
    from inference.synthetic import ROBOT_CHANNELS, ROBOT_REST, sim_face_pose

    assert SIM_FACE.channels == tuple(ROBOT_CHANNELS)
    np.testing.assert_allclose(SIM_FACE.rest, ROBOT_REST)
    # Full pan and tilt turn the simulated head to the ends of the profile's ranges.
    commands = np.tile(ROBOT_REST, (2, 1))
    commands[:, -2:] = [[1.0, 1.0], [0.0, 0.0]]
    _, head = sim_face_pose(commands)
    np.testing.assert_allclose(head[:, 1], [25.0, -25.0], atol=1e-6)
    np.testing.assert_allclose(head[:, 0], [15.0, -15.0], atol=1e-6)
