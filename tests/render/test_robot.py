"""Tests for render.robot: the servo simulation respects each actuator's range, speed limit, latency and
lag; the mechanical face moves as its module docstring documents; wrong clips and profiles are refused;
rendered frames show the jaw and are deterministic.

Expected values are worked out by hand from the documented figures (a 2 units/s servo at 25 fps moves
0.08 a frame; 80 ms at 25 fps is two frames; the jaw opens 22° about its hinge; sim-face's pan spans
±25°), not read back from the code's output.
"""
import math
import os

import numpy as np
import pytest

from inference.motion import MotionClip
from inference.robots import SIM_FACE
from render.rig import RigError
from render.robot import SimRobot, simulate_servos, world_vertices

FPS = 25.0
EYE_CENTRE_Y = 2.0            # both eyes' centres lie at y = 2 mm, z = 10 mm (module docstring / geometry)
EYE_CENTRE_Z = 10.0
NECK_PIVOT = np.array([0.0, -150.0, -62.0])
JAW_HINGE = np.array([0.0, -64.0, -52.0])


def servo(**fields):
    return {"name": "lower.jaw", "lower": 0.0, "upper": 1.0, "rest": 0.0, "max_speed": None, **fields}


def sim_face() -> SimRobot:
    return SimRobot(SIM_FACE.to_dict())


def motor_clip(rig: SimRobot, frames: list[dict[str, float]], fps: float = FPS) -> MotionClip:
    return MotionClip(fps=fps, layout=rig.consumes, values=np.stack([rig.positions(f) for f in frames]),
                      channels=rig.channels)


def part(parts, name):
    return next(p for p in parts if p.name == name)


# --- the servo simulation ------------------------------------------------------------------------------


def test_commands_beyond_the_range_are_clamped_and_frame_zero_is_rest():
    actuator = servo(lower=0.2, upper=0.7, rest=0.5)
    commands = np.array([[0.9], [0.9], [-0.3], [1.5], [0.6]])
    out = simulate_servos(commands, FPS, [actuator])[:, 0]
    # Frame 0 shows rest whatever is commanded; then an unlimited servo reaches each clamped command.
    np.testing.assert_allclose(out, [0.5, 0.7, 0.2, 0.7, 0.6], atol=1e-6)


def test_a_step_becomes_a_ramp_of_max_speed_over_fps_per_frame():
    commands = np.r_[np.zeros(3), np.ones(20)][:, None]
    out = simulate_servos(commands, FPS, [servo(max_speed=2.0)])[:, 0]
    # 2 units/s at 25 fps: 0.08 per frame from the step at frame 3; 0.96 at frame 14, 1.0 from frame 15.
    np.testing.assert_allclose(out[:3], 0.0, atol=1e-7)
    np.testing.assert_allclose(np.diff(out[2:15]), 0.08, atol=1e-6)
    assert out[14] == pytest.approx(0.96, abs=1e-6)
    np.testing.assert_allclose(out[15:], 1.0, atol=1e-6)


def test_rest_is_where_a_limited_servo_starts():
    out = simulate_servos(np.ones((4, 1)), FPS, [servo(rest=0.3, max_speed=2.0)])[:, 0]
    np.testing.assert_allclose(out, [0.3, 0.38, 0.46, 0.54], atol=1e-6)


def test_latency_of_80_ms_at_25_fps_delays_a_step_by_two_frames():
    commands = np.r_[np.zeros(5), np.ones(5)][:, None]
    out = simulate_servos(commands, FPS, [servo(latency_ms=80.0)])[:, 0]
    np.testing.assert_allclose(out, [0, 0, 0, 0, 0, 0, 0, 1, 1, 1], atol=1e-6)


def test_a_sub_frame_latency_is_interpolated_and_the_profile_latency_is_the_default():
    commands = np.r_[np.zeros(5), np.ones(5)][:, None]
    # 20 ms at 25 fps is half a frame: the frame of the step sees half of it.
    out = simulate_servos(commands, FPS, [servo()], latency_ms=20.0)[:, 0]
    np.testing.assert_allclose(out, [0, 0, 0, 0, 0, 0.5, 1, 1, 1, 1], atol=1e-6)


def test_before_the_clip_the_delayed_command_is_rest():
    out = simulate_servos(np.full((4, 1), 0.9), FPS, [servo(rest=0.1, latency_ms=80.0)])[:, 0]
    np.testing.assert_allclose(out, [0.1, 0.1, 0.9, 0.9], atol=1e-6)


def test_a_first_order_lag_covers_63_percent_of_a_step_in_one_time_constant():
    fps = 100.0
    out = simulate_servos(np.ones((12, 1)), fps, [servo(time_constant_ms=100.0)])[:, 0]
    gain = 1.0 - math.exp(-0.1)                     # 10 ms steps of a 100 ms time constant
    assert out[1] == pytest.approx(gain, abs=1e-6)
    assert out[10] == pytest.approx(1.0 - math.exp(-1.0), abs=1e-5)   # ten steps = one time constant


def test_a_10_hz_wiggle_is_smoothed_away_by_a_slow_actuator():
    fps = 100.0
    t = np.arange(200) / fps
    commands = (0.5 + 0.4 * np.sin(2 * np.pi * 10.0 * t))[:, None]
    slow = simulate_servos(commands, fps, [servo(rest=0.5, max_speed=1.0)])[:, 0]
    fast = simulate_servos(commands, fps, [servo(rest=0.5, max_speed=40.0)])[:, 0]
    wanted = np.ptp(commands[100:, 0])               # 0.8 peak to peak
    # In half a period (0.05 s) a 1 unit/s servo moves at most 0.05: ratio ≤ 0.05 / 0.8 ≈ 0.06.
    assert np.ptp(slow[100:]) / wanted < 0.07
    # The wiggle's steepest slope is 0.4 · 2π · 10 ≈ 25 units/s, so a 40 units/s servo keeps it.
    assert np.ptp(fast[100:]) / wanted > 0.95


def test_simulation_is_deterministic_and_vectorised_over_actuators():
    rng = np.random.default_rng(3)
    commands = rng.uniform(-0.2, 1.2, (50, 3))
    actuators = [servo(name="a", max_speed=3.0), servo(name="b", latency_ms=30.0, rest=0.5),
                 servo(name="c", lower=0.1, upper=0.9, rest=0.1, time_constant_ms=50.0)]
    first = simulate_servos(commands, FPS, actuators)
    np.testing.assert_array_equal(first, simulate_servos(commands, FPS, actuators))
    alone = simulate_servos(commands[:, 1:2], FPS, actuators[1:2])
    np.testing.assert_array_equal(first[:, 1:2], alone)
    assert first.dtype == np.float32 and first.shape == (50, 3)


@pytest.mark.parametrize("bad, words", [
    (servo(lower=0.8, upper=0.2), "lower < upper"),
    (servo(rest=1.5), "rest"),
    (servo(max_speed=0.0), "max_speed"),
    (servo(latency_ms=-5.0), "negative"),
    ({"lower": 0.0}, "channel name"),
])
def test_malformed_actuators_are_refused_with_the_field_named(bad, words):
    with pytest.raises(RigError, match=words):
        simulate_servos(np.zeros((3, 1)), FPS, [bad])


# --- the rig: prepare --------------------------------------------------------------------------------------


def test_prepare_simulates_the_profile_and_records_it():
    rig = sim_face()
    assert rig.consumes == "motors:sim-face"
    # The jaw is asked to open fully at once; sim-face's jaw runs at 5 units/s after 40 ms (one frame).
    clip = motor_clip(rig, [{}] + [{"lower.jaw": 1.0}] * 9)
    prepared = rig.prepare(clip)
    jaw = prepared.values[:, rig.channels.index("lower.jaw")]
    np.testing.assert_allclose(jaw, [0.0, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0, 1.0], atol=1e-6)
    assert prepared.metadata["simulated"] is True
    assert prepared.metadata["robot_profile"] == SIM_FACE.to_dict()
    assert rig.prepare(prepared) is prepared          # already simulated: not slowed down twice


def test_prepare_reorders_columns_named_in_another_order():
    rig = sim_face()
    clip = motor_clip(rig, [{"lower.jaw": 0.5}] * 3, fps=5.0)
    shuffled = MotionClip(fps=5.0, layout=clip.layout, values=clip.values[:, ::-1], channels=clip.channels[::-1])
    np.testing.assert_array_equal(rig.prepare(shuffled).values, rig.prepare(clip).values)


def test_a_clip_in_another_layout_is_refused_with_the_inverse_model_named():
    clip = MotionClip(fps=FPS, layout="arkit52", values=np.zeros((5, 52), np.float32))
    with pytest.raises(RigError, match="inverse model") as caught:
        sim_face().prepare(clip)
    assert "apply_inverse" in str(caught.value)


def test_a_clip_missing_channels_is_refused():
    clip = MotionClip(fps=FPS, layout="motors:sim-face", values=np.zeros((5, 1), np.float32), channels=("lower.jaw",))
    with pytest.raises(RigError, match="missing upper.brow_left"):
        sim_face().prepare(clip)


def test_a_profile_naming_a_channel_twice_is_refused():
    profile = SIM_FACE.to_dict()
    profile["actuators"].append(dict(profile["actuators"][0]))
    with pytest.raises(RigError, match="twice: upper.brow_left"):
        SimRobot(profile)


def test_malformed_profiles_are_refused():
    with pytest.raises(RigError, match="no actuators"):
        SimRobot({"name": "empty", "actuators": []})
    with pytest.raises(RigError, match="motor layout"):
        SimRobot({"name": "Not A Name!", "actuators": [servo()]})
    with pytest.raises(RigError, match="lower"):
        SimRobot({"name": "bad", "actuators": [servo(lower=0.5, upper=0.5)]})


# --- the rig: the face ---------------------------------------------------------------------------------


def test_jaw_opening_lowers_the_jaw_plate_by_the_documented_angle():
    rig = sim_face()
    closed = part(rig.parts_for(rig.positions()), "jaw")
    opened = part(rig.parts_for(rig.positions({"lower.jaw": 1.0})), "jaw")
    # The chin's front-bottom edge (y −116, z 20) is 52 mm below and 72 mm in front of the hinge; turned
    # 22° down it drops to 52·cos 22° + 72·sin 22° = 75.2 mm below the hinge: about 23 mm lower.
    drop = world_vertices(closed)[:, 1].min() - world_vertices(opened)[:, 1].min()
    assert 18.0 < drop < 26.0
    chin = np.array([0.0, -116.0, 20.0, 1.0])
    moved = np.asarray(opened.transform, np.float64) @ chin
    c, s = math.cos(math.radians(22.0)), math.sin(math.radians(22.0))
    expected = JAW_HINGE + [0.0, -52.0 * c - 72.0 * s, -52.0 * s + 72.0 * c]
    np.testing.assert_allclose(moved[:3], expected, atol=1e-3)


def test_closing_the_eyelids_covers_the_eyes():
    rig = sim_face()

    def lowest_front_lid_point(commands, side):
        lids = world_vertices(part(rig.parts_for(rig.positions(commands)), "upper_lids"))
        front = lids[(lids[:, 2] > EYE_CENTRE_Z + 1.0) & ((lids[:, 0] > 0) == (side == "left"))]
        return front[:, 1].min()

    # At rest (0.2) the lid's edge stands 20° above the eye's axis: every front lid point is above the
    # eye's centre. Closed (1.0) the edge is 100° below the axis, so the lid reaches well below the centre.
    for side in ("left", "right"):
        assert lowest_front_lid_point({}, side) > EYE_CENTRE_Y
        closed = lowest_front_lid_point({f"upper.eyelid_{side}": 1.0}, side)
        assert closed < EYE_CENTRE_Y - 10.0
    # Each lid follows its own servo.
    assert lowest_front_lid_point({"upper.eyelid_left": 1.0}, "right") > EYE_CENTRE_Y


def test_head_pan_turns_the_head_about_the_neck_by_the_profile_angle():
    rig = sim_face()
    # sim-face's pan spans −25°..+25°: command 1 is +25° (nose to the viewer's right, +x).
    turned = part(rig.parts_for(rig.positions({"head.pan": 1.0})), "shell")
    transform = np.asarray(turned.transform, np.float64)
    ahead = np.append(NECK_PIVOT + [0.0, 0.0, 100.0], 1.0)
    sin25, cos25 = math.sin(math.radians(25.0)), math.cos(math.radians(25.0))
    np.testing.assert_allclose(transform @ ahead, [100.0 * sin25, -150.0, -62.0 + 100.0 * cos25, 1.0], atol=1e-3)
    np.testing.assert_allclose(transform @ np.append(NECK_PIVOT, 1.0), [*NECK_PIVOT, 1.0], atol=1e-3)
    centred = part(rig.parts_for(rig.positions({"head.pan": 0.5})), "shell")
    np.testing.assert_allclose(centred.transform, np.eye(4), atol=1e-6)
    # The stand does not turn; the faceplate turns with the head.
    assert np.allclose(part(rig.parts_for(rig.positions({"head.pan": 1.0})), "neck_post").transform, np.eye(4))
    face = part(rig.parts_for(rig.positions({"head.pan": 1.0})), "faceplate")
    np.testing.assert_allclose(face.transform, turned.transform)


def test_head_tilt_nods_the_nose_down_and_a_head_range_comes_from_the_profile():
    profile = SIM_FACE.to_dict()
    for actuator in profile["actuators"]:
        if actuator["name"] == "head.tilt":
            actuator["pose_range_deg"] = [-40.0, 40.0]
    rig = SimRobot(profile)
    tilted = np.asarray(part(rig.parts_for(rig.positions({"head.tilt": 1.0})), "shell").transform, np.float64)
    # +40° about x through the pivot: a point 100 mm ahead of the pivot goes down by 100·sin 40°.
    ahead = tilted @ np.append(NECK_PIVOT + [0.0, 0.0, 100.0], 1.0)
    assert ahead[1] == pytest.approx(-150.0 - 100.0 * math.sin(math.radians(40.0)), abs=1e-3)
    assert ahead[0] == pytest.approx(0.0, abs=1e-6)


def test_a_roll_actuator_found_by_name_tips_the_head_by_the_default_range():
    rig = SimRobot({"name": "roller", "actuators": [servo(name="head.roll", rest=0.5)]})
    rolled = np.asarray(part(rig.parts_for([1.0]), "shell").transform, np.float64)
    # No pose_channel or range given: head.roll follows rz over ±30°; +30° tips the top to the viewer's left.
    above = rolled @ np.append(NECK_PIVOT + [0.0, 100.0, 0.0], 1.0)
    assert above[0] == pytest.approx(-50.0, abs=1e-3)
    assert above[1] == pytest.approx(-150.0 + 100.0 * math.cos(math.radians(30.0)), abs=1e-3)


def test_servo_figures_come_from_the_actuator_then_extra_then_the_profile():
    profile = {"name": "lagged", "latency_ms": 40.0, "extra": {"actuators": {"lower.jaw": {"latency_ms": 80.0}}},
               "actuators": [servo(), servo(name="upper.brow_left"), servo(name="lower.lower_lip", latency_ms=0.0)]}
    rig = SimRobot(profile)
    clip = MotionClip(fps=FPS, layout=rig.consumes, values=np.r_[np.zeros((3, 3)), np.ones((5, 3))],
                      channels=rig.channels)
    out = rig.prepare(clip).values
    # Step at frame 3: jaw 80 ms (extra) → frame 5; brow 40 ms (profile) → frame 4; lower lip 0 ms → frame 3.
    assert [int(np.argmax(out[:, j] > 0.5)) for j in range(3)] == [5, 4, 3]


def test_smiling_moves_the_lip_corners_up_and_out():
    rig = sim_face()
    rest = world_vertices(part(rig.parts_for(rig.positions()), "lips"))
    smile = world_vertices(part(rig.parts_for(rig.positions({"lower.lip_corner_left": 1.0,
                                                             "lower.lip_corner_right": 1.0})), "lips"))
    # Command 1: the corners go 8 mm up and 4 mm out; the lips' outer ends follow them fully.
    assert smile[:, 0].max() == pytest.approx(rest[:, 0].max() + 4.0, abs=0.01)
    assert smile[:, 0].min() == pytest.approx(rest[:, 0].min() - 4.0, abs=0.01)
    ends = np.abs(rest[:, 0]) > 24.0
    assert np.all(smile[ends, 1] - rest[ends, 1] > 7.0)


def test_a_profile_lacking_channels_keeps_those_parts_at_rest():
    only_jaw = {"name": "jaw-only", "actuators": [servo(max_speed=5.0), servo(name="middle.cheek_left")]}
    rig = SimRobot(only_jaw)
    assert rig.unmapped_channels == ("middle.cheek_left",)
    full = sim_face()
    for name in ("upper_lids", "brows", "lips", "shell"):
        a = part(rig.parts_for([0.0, 0.7]), name)
        b = part(full.parts_for(full.positions()), name)
        np.testing.assert_allclose(world_vertices(a), world_vertices(b), atol=1e-4)
    jaw = part(rig.parts_for([1.0, 0.0]), "jaw")
    assert not np.allclose(jaw.transform, np.eye(4))


def test_parts_are_well_formed_and_framed():
    rig = sim_face()
    parts = rig.parts_for(rig.positions())
    assert len({p.name for p in parts}) == len(parts)
    target, height = rig.look_at()
    for p in parts:
        assert p.faces.max() < len(p.vertices) and p.faces.min() >= 0
        v = world_vertices(p).astype(np.float64)[p.faces]
        volume = np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6.0
        assert volume > 0, f"{p.name} is wound inwards (the renderer would cull its outside)"
    head = np.concatenate([world_vertices(p) for p in parts if p.name in ("shell", "faceplate", "jaw")])
    assert head[:, 1].max() < target[1] + height / 2 and head[:, 1].min() > target[1] - height / 2
    # Static parts share their vertex arrays between frames (the renderer uploads them once).
    again = rig.parts_for(rig.positions({"lower.jaw": 0.6}))
    for a, b in zip(parts, again):
        if a.static:
            assert a.vertices is b.vertices


def test_parts_refuse_other_layouts_and_frames_out_of_range():
    rig = sim_face()
    with pytest.raises(RigError, match="inverse model"):
        rig.parts(MotionClip(fps=FPS, layout="arkit52", values=np.zeros((2, 52), np.float32)), 0)
    with pytest.raises(RigError, match="outside"):
        rig.parts(motor_clip(rig, [{}]), 3)


# --- rendered frames -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def renderer():
    os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    offscreen = pytest.importorskip("render.offscreen", reason="render/offscreen.py (the renderer) is not there yet")
    return offscreen.get_renderer(offscreen.RenderSettings(width=160, height=160, supersample=1))


def mouth_box(size: int, target, height: float) -> tuple[slice, slice]:
    """Pixel rows and columns of x −40..40 mm, y −105..−60 mm (the mouth, open or shut) seen head-on."""
    scale = size / height

    def column(x):
        return int(round(size / 2 + x * scale))

    def row(y):
        return int(round(size / 2 - (y - target[1]) * scale))

    return slice(row(-60.0), row(-105.0)), slice(column(-40.0), column(40.0))


def test_an_open_jaw_shows_a_dark_mouth_and_frames_are_deterministic(renderer):
    rig = sim_face()
    target, height = rig.look_at()
    closed = renderer.render(rig.parts_for(rig.positions()), look_at=rig.look_at())
    opened = renderer.render(rig.parts_for(rig.positions({"lower.jaw": 1.0})), look_at=rig.look_at())
    assert closed.shape == (160, 160, 3) and closed.dtype == np.uint8
    rows, cols = mouth_box(160, target, height)

    def dark_pixels(frame):
        return int((frame[rows, cols].max(axis=2) < 45).sum())

    # Shut, only the seams between the lips and the plates are dark; open, a gap of about 26 mm × 90 mm.
    assert dark_pixels(opened) > 4 * max(dark_pixels(closed), 1)
    assert dark_pixels(opened) > 100
    again = renderer.render(rig.parts_for(rig.positions({"lower.jaw": 1.0})), look_at=rig.look_at())
    np.testing.assert_array_equal(again, opened)
