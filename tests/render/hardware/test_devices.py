"""Robot device strings: every form parses to what it says, bad strings are refused naming the form expected,
and open_robot builds the driver the string names — a simulated robot that plays, a Maestro from its YAML
file (connected to the fake Maestro of test_maestro.py on a real pseudo-terminal), a Furhat at its address.
"""
import math

import numpy as np
import pytest
import yaml

from inference.robots import SIM_FACE
from render.hardware.base import DeviceNotFound, HardwareError
from render.hardware.devices import describe_forms, load_profile, open_robot, parse_robot
from render.hardware.furhat import FurhatRobot
from render.hardware.maestro import MaestroRobot
from render.hardware.simulated import SimulatedRobot
from tests.render.hardware.test_maestro import TWO, WIRING, FakeMaestro

SIM_FORM = "sim[:latency_ms="
MAESTRO_FORM = "maestro:[PORT]?config=FILE.yaml"
FURHAT_FORM = "furhat:HOST[:PORT]"


def _write_yaml(path, data):
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def fake_maestro():
    fake = FakeMaestro()
    yield fake
    fake.close()


@pytest.fixture
def brows_profile(tmp_path):
    """A two-actuator profile file (brows only), in the RobotProfile.to_dict() shape."""
    data = {"name": "brows", "latency_ms": 25.0, "description": "two brow servos", "extra": {},
            "actuators": [{"name": "upper.brow_left", "lower": 0.0, "upper": 1.0, "rest": 0.1, "max_speed": 3.0,
                           "pose_channel": None, "pose_range_deg": None},
                          {"name": "upper.brow_right", "lower": 0.0, "upper": 1.0, "rest": 0.1, "max_speed": 3.0,
                           "pose_channel": None, "pose_range_deg": None, "time_constant_ms": 20.0}]}
    return _write_yaml(tmp_path / "brows.yaml", data)


# --- parsing --------------------------------------------------------------------------------------------------

def test_every_form_parses():
    assert parse_robot("sim") == {"scheme": "sim"}
    assert parse_robot(" sim: ") == {"scheme": "sim"}
    assert parse_robot("sim:latency_ms=120,jitter_ms=10,fail_after_s=3,seed=7,profile=sim-face") == {
        "scheme": "sim", "latency_ms": 120.0, "jitter_ms": 10.0, "fail_after_s": 3.0, "seed": 7,
        "profile": "sim-face"}
    assert parse_robot("maestro:/dev/ttyACM0?config=/etc/robot.yaml") == {
        "scheme": "maestro", "port": "/dev/ttyACM0", "config": "/etc/robot.yaml"}
    assert parse_robot("maestro:?config=robot.yaml") == {"scheme": "maestro", "port": None, "config": "robot.yaml"}
    assert parse_robot("furhat:192.168.1.20") == {"scheme": "furhat", "host": "192.168.1.20", "port": 54321,
                                                   "profile": None}
    assert parse_robot("furhat:robot.local:8080?profile=furhat") == {
        "scheme": "furhat", "host": "robot.local", "port": 8080, "profile": "furhat"}
    assert parse_robot("furhat:[fe80::1]:9000") == {"scheme": "furhat", "host": "fe80::1", "port": 9000,
                                                     "profile": None}
    assert parse_robot("furhat:[::1]")["port"] == 54321


def test_sim_options_are_typed():
    parsed = parse_robot("sim:latency_ms=50,seed=3")
    assert type(parsed["latency_ms"]) is float and type(parsed["seed"]) is int


@pytest.mark.parametrize("device, why", [
    ("sim:speed=3", "'speed=3' is not one of the options"),
    ("sim:latency_ms", "'latency_ms' is not one of the options"),
    ("sim:latency_ms=fast", "latency_ms must be a number"),
    ("sim:latency_ms=-5", "latency_ms must be ≥ 0"),
    ("sim:jitter_ms=nan", "jitter_ms must be ≥ 0 and finite"),
    ("sim:fail_after_s=inf", "fail_after_s must be ≥ 0 and finite"),
    ("sim:seed=1.5", "seed must be an integer"),
    ("sim:seed=-1", "seed must be ≥ 0"),
    ("sim:latency_ms=1,latency_ms=2", "latency_ms is given twice"),
    ("sim:profile=", "profile needs a value"),
])
def test_bad_sim_options_are_refused_with_the_form(device, why):
    with pytest.raises(DeviceNotFound) as caught:
        parse_robot(device)
    assert why in str(caught.value) and SIM_FORM in str(caught.value) and repr(device) in str(caught.value)


@pytest.mark.parametrize("device, why", [
    ("maestro:/dev/ttyACM0", "settings file is missing"),
    ("maestro:/dev/ttyACM0?port=1", "unknown option 'port'"),
    ("maestro:/dev/ttyACM0?config=", "config needs the path"),
    ("maestro:", "settings file is missing"),
])
def test_bad_maestro_strings_are_refused_with_the_form(device, why):
    with pytest.raises(DeviceNotFound) as caught:
        parse_robot(device)
    assert why in str(caught.value) and MAESTRO_FORM in str(caught.value)


@pytest.mark.parametrize("device, why", [
    ("furhat", "host name or address is missing"),
    ("furhat::54321", "host name or address is missing"),
    ("furhat:robot.local:", "port after ':' is missing"),
    ("furhat:robot.local:http", "port must be a number 1..65535"),
    ("furhat:robot.local:70000", "port must be a number 1..65535"),
    ("furhat:fe80::1", "IPv6 address in brackets"),
    ("furhat:[fe80::1", "IPv6 address goes in brackets"),
    ("furhat:[fe80::1]x", "IPv6 address goes in brackets"),
    ("furhat:robot.local?voice=x", "the only option is profile"),
])
def test_bad_furhat_strings_are_refused_with_the_form(device, why):
    with pytest.raises(DeviceNotFound) as caught:
        parse_robot(device)
    assert why in str(caught.value) and FURHAT_FORM in str(caught.value)


@pytest.mark.parametrize("device", ["robot", "simulated", "v4l2:/dev/video0", "", None])
def test_an_unknown_scheme_lists_every_form(device):
    with pytest.raises(DeviceNotFound) as caught:
        parse_robot(device)
    message = str(caught.value)
    for form in (SIM_FORM, MAESTRO_FORM, FURHAT_FORM):
        assert form in message
    if device:
        assert f"unknown robot device {device!r}" in message


def test_describe_forms_names_one_form_per_scheme():
    forms = describe_forms()
    assert len(forms) == 3
    assert [f.split(":")[0].split("[")[0] for f in forms] == ["sim", "maestro", "furhat"]


# --- simulated ------------------------------------------------------------------------------------------------

def test_sim_opens_a_simulated_robot_with_that_latency_that_connects_and_plays():
    robot = open_robot("sim:latency_ms=50")
    assert isinstance(robot, SimulatedRobot) and not robot.connected
    assert robot.latency_s == pytest.approx(0.05) and robot.describe()["name"] == "sim-face"
    with robot:
        report = robot.play(np.tile(SIM_FACE.rest, (3, 1)), 100)
        assert report.frames == 3 and robot.health()["ok"]
    sent, effective = robot.sent_log[0][0], robot.effective_log[0]
    assert effective - sent == pytest.approx(0.05)       # no jitter by default: exactly the latency


def test_sim_defaults_to_the_profiles_latency_and_takes_every_option():
    assert open_robot("sim").latency_s == pytest.approx(SIM_FACE.latency_ms / 1000)   # 40 ms
    robot = open_robot("sim:jitter_ms=10,fail_after_s=3,seed=4,latency_ms=0")
    assert (robot.latency_s, robot.jitter_s, robot.fail_after_s) == (0.0, 0.01, 3.0)
    twin = open_robot("sim:jitter_ms=10,fail_after_s=3,seed=4,latency_ms=0")
    assert robot._rng.normal() == twin._rng.normal()     # the seed reached the generator
    assert open_robot("sim:latency_ms=50", latency_ms=10).latency_s == pytest.approx(0.01)   # options win


def test_sim_profile_by_name_by_file_and_unknown(brows_profile, tmp_path):
    robot = open_robot(f"sim:profile={brows_profile}")
    described = robot.describe()
    assert described["name"] == "brows" and [a["name"] for a in described["actuators"]] == [
        "upper.brow_left", "upper.brow_right"]
    assert robot.latency_s == pytest.approx(0.025)       # the file's latency_ms
    with robot:
        assert robot.play([[0.5, 0.5]], 50).frames == 1
    assert open_robot("sim:profile=furhat").describe()["name"] == "furhat"
    with pytest.raises(HardwareError, match="no built-in robot profile 'nobody'; known: furhat, sim-face"):
        open_robot("sim:profile=nobody")
    with pytest.raises(HardwareError, match="missing.yaml' does not exist"):
        open_robot(f"sim:profile={tmp_path / 'missing.yaml'}")


def test_a_bad_profile_file_is_refused_naming_the_file(tmp_path):
    cases = {
        "list.yaml": ["not", "a", "mapping"],
        "nameless.yaml": {"actuators": [{"name": "lower.jaw"}]},
        "empty.yaml": {"name": "x", "actuators": []},
        "range.yaml": {"name": "x", "actuators": [{"name": "lower.jaw", "lower": 0.8, "upper": 0.2}]},
        "twice.yaml": {"name": "x", "actuators": [{"name": "lower.jaw"}, {"name": "lower.jaw"}]},
        "latency.yaml": {"name": "x", "actuators": [{"name": "lower.jaw"}], "latency_ms": -3},
    }
    for filename, data in cases.items():
        path = _write_yaml(tmp_path / filename, data)
        with pytest.raises(HardwareError, match=filename):
            load_profile(str(path))
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nactuators: [\n", encoding="utf-8")
    with pytest.raises(HardwareError, match=r"broken.yaml' is not valid YAML at line \d+"):
        open_robot(f"sim:profile={broken}")


# --- maestro --------------------------------------------------------------------------------------------------

def test_maestro_opens_from_its_yaml_with_the_strings_port_and_plays(tmp_path, fake_maestro):
    config = _write_yaml(tmp_path / "robot.yaml", {"port": "/dev/no-such-port", "profile": TWO, "channels": WIRING,
                                                   "timeout_s": 0.5})
    robot = open_robot(f"maestro:{fake_maestro.port}?config={config}")
    assert isinstance(robot, MaestroRobot) and robot.port == fake_maestro.port
    robot.connect()
    try:
        before = len(fake_maestro.commands)
        robot.play([[0.25, 0.0]], 50)
        # jaw 1000 + 0.25 · 1000 = 1250 µs = 5000 quarter-µs; the mirrored pan at 0 is 2000 µs = 8000.
        played = fake_maestro.wait_for(before + 2)[before:]
        assert ("set_target", 0, 5000) in played and ("set_target", 1, 8000) in played
    finally:
        robot.close()


def test_maestro_takes_the_port_and_a_profile_file_from_its_config(tmp_path, brows_profile):
    channels = {"upper.brow_left": {"channel": 0, "min_us": 1000, "max_us": 2000},
                "upper.brow_right": {"channel": 1, "min_us": 1000, "max_us": 2000}}
    config = _write_yaml(tmp_path / "robot.yaml", {"port": "/dev/ttyACM3", "profile": brows_profile.name,
                                                   "channels": channels})
    robot = open_robot(f"maestro:?config={config}")
    assert robot.port == "/dev/ttyACM3" and robot.describe()["name"] == "brows"   # profile relative to the file
    assert open_robot(f"maestro:?config={config}", port="/dev/ttyUSB0").port == "/dev/ttyUSB0"


def test_a_missing_or_invalid_maestro_yaml_names_the_file(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(HardwareError, match="Maestro config file '.*nowhere.yaml' does not exist"):
        open_robot(f"maestro:/dev/ttyACM0?config={missing}")
    broken = tmp_path / "broken.yaml"
    broken.write_text("port: /dev/ttyACM0\nchannels: {lower.jaw: [\n", encoding="utf-8")
    with pytest.raises(HardwareError, match=r"broken.yaml' is not valid YAML at line"):
        open_robot(f"maestro:/dev/ttyACM0?config={broken}")
    scalar = _write_yaml(tmp_path / "scalar.yaml", "just text")
    with pytest.raises(HardwareError, match="scalar.yaml' must hold a mapping"):
        open_robot(f"maestro:/dev/ttyACM0?config={scalar}")
    portless = _write_yaml(tmp_path / "portless.yaml", {"profile": TWO, "channels": WIRING})
    with pytest.raises(HardwareError, match="no Maestro port.*portless.yaml"):
        open_robot(f"maestro:?config={portless}")
    unwired = _write_yaml(tmp_path / "unwired.yaml", {"profile": TWO, "channels": {"lower.jaw": WIRING["lower.jaw"]}})
    with pytest.raises(HardwareError, match="unwired.yaml.*no channel config for head.pan"):
        open_robot(f"maestro:/dev/ttyACM0?config={unwired}")
    nobody = _write_yaml(tmp_path / "nobody.yaml", {"profile": "nobody", "channels": WIRING})
    with pytest.raises(HardwareError, match="nobody.yaml.*no built-in robot profile 'nobody'"):
        open_robot(f"maestro:/dev/ttyACM0?config={nobody}")


# --- furhat ---------------------------------------------------------------------------------------------------

def test_furhat_opens_at_its_address_with_its_profile(brows_profile):
    robot = open_robot("furhat:192.168.1.20")
    assert isinstance(robot, FurhatRobot) and not robot.connected
    assert robot.base_url == "http://192.168.1.20:54321" and robot.describe()["name"] == "furhat"
    assert open_robot("furhat:[fe80::1]:9000").base_url == "http://[fe80::1]:9000"
    robot = open_robot(f"furhat:robot.local:8080?profile={brows_profile}", timeout_s=0.5)
    assert robot.base_url == "http://robot.local:8080" and robot.timeout_s == 0.5
    assert [param for param, _ in robot.params] == ["BROW_UP_LEFT", "BROW_UP_RIGHT"]
    with pytest.raises(HardwareError, match="no gesture parameter for lower.jaw"):
        open_robot("furhat:robot.local?profile=sim-face")


def test_a_profile_dict_given_as_an_option_wins():
    profile = SIM_FACE.to_dict()
    profile["name"] = "renamed"
    robot = open_robot("sim:profile=furhat", profile=profile)
    assert robot.describe()["name"] == "renamed" and math.isclose(robot.latency_s, 0.04)
