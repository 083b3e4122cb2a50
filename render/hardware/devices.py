"""Robot device strings: which robot a command line, a task or a study's capture settings mean, and the driver
that opens it (as `camera.parse_device` / `camera.open_camera` do for cameras).

Forms (`describe_forms()` lists them for --help texts):

- `sim` / `sim:latency_ms=120,jitter_ms=10,fail_after_s=3,seed=0,profile=sim-face` — `SimulatedRobot`.
  Every option is optional: `latency_ms` (≥ 0; default the profile's own `latency_ms`), `jitter_ms` (≥ 0,
  default 0), `fail_after_s` (≥ 0; default never), `seed` (an integer ≥ 0, default 0), `profile` (default
  `sim-face`).
- `maestro:/dev/ttyACM0?config=/path/robot.yaml` — `MaestroRobot.from_config` with the YAML file's settings
  (see render/hardware/maestro.py), its `port:` replaced by the string's port; `maestro:?config=FILE` takes
  the port from the file. The file's `profile:` may also be a profile file, relative to the config file.
- `furhat:HOST[:PORT][?profile=...]` — `FurhatRobot` on the Remote API at HOST (a name, an IPv4 address or an
  IPv6 address in brackets: `furhat:[fe80::1]:54321`); PORT defaults to 54321 (`furhat.REMOTE_API_PORT`),
  the profile to `furhat.FURHAT_PROFILE`.

A profile is a built-in name (`inference.robots.PROFILES`, and `furhat`) or the path of a YAML (or JSON)
file holding one profile dict in the `RobotProfile.to_dict()` shape; a value ending in .yaml, .yml or .json,
or holding a '/', is a path. `open_robot` returns the robot not yet connected.
"""
from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from urllib.parse import parse_qsl

import yaml

from render.hardware.base import DeviceNotFound, HardwareError, Robot

SCHEMES = ("sim", "maestro", "furhat")
FORMS = {
    "sim": "sim[:latency_ms=120,jitter_ms=10,fail_after_s=3,seed=0,profile=NAME|FILE.yaml]",
    "maestro": "maestro:[PORT]?config=FILE.yaml",
    "furhat": "furhat:HOST[:PORT][?profile=NAME|FILE.yaml]",
}
SIM_OPTIONS = {"latency_ms": float, "jitter_ms": float, "fail_after_s": float, "seed": int, "profile": str}
DEFAULT_SIM_PROFILE = "sim-face"
PROFILE_SUFFIXES = (".yaml", ".yml", ".json")


def describe_forms() -> list[str]:
    """The robot device string forms, one per scheme (for --help texts and error messages)."""
    return [FORMS[scheme] for scheme in SCHEMES]


def _bad(scheme: str, device: str, why: str) -> DeviceNotFound:
    return DeviceNotFound(f"robot device {device!r}: {why}; expected {FORMS[scheme]}")


# --- parsing ------------------------------------------------------------------------------------------------


def _sim_value(key: str, value: str, device: str):
    kind = SIM_OPTIONS[key]
    if kind is str:
        if not value:
            raise _bad("sim", device, f"{key} needs a value (a built-in profile name or a profile YAML file)")
        return value
    try:
        number = kind(value)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise _bad("sim", device, f"{key} must be {what} ≥ 0, got {value!r}") from None
    if not (math.isfinite(number) and number >= 0):
        raise _bad("sim", device, f"{key} must be ≥ 0 and finite, got {value!r}")
    return number


def _parse_sim(rest: str, device: str) -> dict:
    parsed: dict = {"scheme": "sim"}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in SIM_OPTIONS:
            raise _bad("sim", device, f"{item!r} is not one of the options {', '.join(SIM_OPTIONS)} as key=value")
        if key in parsed:
            raise _bad("sim", device, f"{key} is given twice")
        parsed[key] = _sim_value(key, value.strip(), device)
    return parsed


def _parse_maestro(rest: str, device: str) -> dict:
    port, sep, query = rest.rpartition("?")
    if not sep:
        raise _bad("maestro", device, "the Maestro's settings file is missing (?config=FILE.yaml)")
    config = None
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key != "config":
            raise _bad("maestro", device, f"unknown option {key!r} (the only option is config)")
        if not value:
            raise _bad("maestro", device, "config needs the path of the Maestro's YAML settings file")
        config = value
    if config is None:
        raise _bad("maestro", device, "the Maestro's settings file is missing (?config=FILE.yaml)")
    return {"scheme": "maestro", "port": port.strip() or None, "config": config}


def _parse_furhat(rest: str, device: str) -> dict:
    address, sep, query = rest.partition("?")
    profile = None
    if sep:
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key != "profile" or not value:
                raise _bad("furhat", device, f"the only option is profile=NAME or profile=FILE.yaml, got {key}={value}")
            profile = value
    from render.hardware.furhat import REMOTE_API_PORT

    if address.startswith("["):
        host, bracket, after = address[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise _bad("furhat", device, "an IPv6 address goes in brackets, then optionally :PORT "
                                         "(e.g. furhat:[fe80::1]:54321)")
        colon, port = after[:1], after[1:]
    else:
        if address.count(":") > 1:
            raise _bad("furhat", device, "put an IPv6 address in brackets (e.g. furhat:[fe80::1]:54321)")
        host, colon, port = address.partition(":")
    if colon and not port:
        raise _bad("furhat", device, "the port after ':' is missing")
    host = host.strip()
    if not host:
        raise _bad("furhat", device, "the robot's host name or address is missing")
    if port:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise _bad("furhat", device, f"the port must be a number 1..65535, got {port!r}")
        number = int(port)
    else:
        number = REMOTE_API_PORT
    return {"scheme": "furhat", "host": host, "port": number, "profile": profile}


def parse_robot(device: str) -> dict:
    """A robot device string as a dict; raises DeviceNotFound naming the expected form.

    - sim: {"scheme": "sim"} plus the options given, typed (latency_ms, jitter_ms, fail_after_s: float; seed:
      int; profile: str).
    - maestro: {"scheme": "maestro", "port": str or None (the file's), "config": str (the YAML file)}.
    - furhat: {"scheme": "furhat", "host": str (IPv6 without brackets), "port": int, "profile": str or None}.
    """
    if not isinstance(device, str) or not device.strip():
        raise DeviceNotFound(f"a robot device string is needed (expected one of {', '.join(describe_forms())}), "
                             f"got {device!r}")
    device = device.strip()
    scheme, _sep, rest = device.partition(":")
    if scheme == "sim":
        return _parse_sim(rest, device)
    if scheme == "maestro":
        return _parse_maestro(rest, device)
    if scheme == "furhat":
        return _parse_furhat(rest, device)
    raise DeviceNotFound(f"unknown robot device {device!r}: expected one of {', '.join(describe_forms())}")


# --- profiles and files -------------------------------------------------------------------------------------


def _read_yaml(path: Path, what: str):
    """The parsed content of a YAML (or JSON) file; HardwareError naming the file when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HardwareError(f"{what} {str(path)!r} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HardwareError(f"{what} {str(path)!r} cannot be read ({exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise HardwareError(f"{what} {str(path)!r} is not valid YAML{where}: {problem}") from None


def _builtin_profiles() -> dict:
    from inference.robots import PROFILES
    from render.hardware.furhat import FURHAT_PROFILE

    return {"furhat": FURHAT_PROFILE, **{name: profile.to_dict() for name, profile in PROFILES.items()}}


def _is_path(spec: str) -> bool:
    return spec.lower().endswith(PROFILE_SUFFIXES) or "/" in spec or os.sep in spec


def _check_profile(data, path: Path) -> dict:
    """A profile dict read from `path`, checked as the drivers read it (extra actuator keys such as
    time_constant_ms or furhat_param are kept); HardwareError naming the file and the field to fix."""
    from render.rig import RigError
    from render.robot import servo_from_dict

    shape = ("a mapping with name, actuators ([{name, lower, upper, rest, max_speed, pose_channel, "
             "pose_range_deg}]), latency_ms and extra, as RobotProfile.to_dict() writes")
    if not isinstance(data, dict):
        raise HardwareError(f"robot profile file {str(path)!r} must hold {shape}, got {type(data).__name__}")
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise HardwareError(f"robot profile file {str(path)!r} needs a name (the robot's, e.g. my-face)")
    actuators = data.get("actuators")
    if not isinstance(actuators, list) or not actuators:
        raise HardwareError(f"robot profile file {str(path)!r} needs a non-empty actuators list; it must hold {shape}")
    names = []
    for actuator in actuators:
        try:
            names.append(servo_from_dict(actuator).name)
        except RigError as exc:
            raise HardwareError(f"robot profile file {str(path)!r}: {exc}") from None
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise HardwareError(f"robot profile file {str(path)!r} names an actuator twice: {', '.join(twice)}")
    latency = data.get("latency_ms", 0.0)
    if isinstance(latency, bool) or not isinstance(latency, (int, float)) or not (math.isfinite(latency)
                                                                                  and latency >= 0):
        raise HardwareError(f"robot profile file {str(path)!r}: latency_ms must be a number ≥ 0, got {latency!r}")
    if not isinstance(data.get("extra") or {}, dict):
        raise HardwareError(f"robot profile file {str(path)!r}: extra must be a mapping, got {data['extra']!r}")
    profile = copy.deepcopy(data)
    profile["latency_ms"] = float(latency)
    profile.setdefault("description", "")
    profile["extra"] = profile.get("extra") or {}
    return profile


def load_profile(spec: str, *, base: Path | str | None = None) -> dict:
    """A robot profile dict (`RobotProfile.to_dict()` shape) from a built-in name or a profile file (relative
    paths against `base`, else the working directory); HardwareError naming the file or the known names."""
    if not isinstance(spec, str) or not spec.strip():
        raise HardwareError(f"a robot profile is a built-in name or a YAML file, got {spec!r}")
    spec = spec.strip()
    if _is_path(spec):
        path = Path(spec).expanduser()
        if base is not None and not path.is_absolute():
            path = Path(base) / path
        return _check_profile(_read_yaml(path, "robot profile file"), path)
    builtins = _builtin_profiles()
    if spec not in builtins:
        raise HardwareError(f"no built-in robot profile {spec!r}; known: {', '.join(sorted(builtins))}, or give "
                            "the path of a profile YAML file (ending in .yaml)")
    return copy.deepcopy(builtins[spec])


# --- opening ------------------------------------------------------------------------------------------------


def _open_maestro(parsed: dict, options: dict) -> Robot:
    from render.hardware.maestro import CONFIG_KEYS, MaestroRobot

    path = Path(parsed["config"]).expanduser()
    config = _read_yaml(path, "Maestro config file")
    if not isinstance(config, dict):
        raise HardwareError(f"Maestro config file {str(path)!r} must hold a mapping (port, profile, channels, …), "
                            f"got {type(config).__name__}")
    if parsed["port"] is not None:
        config["port"] = parsed["port"]
    overrides = {k: options.pop(k) for k in list(options) if k in CONFIG_KEYS}
    config.update(overrides)
    if not config.get("port"):
        raise HardwareError(f"no Maestro port: give it in the device string (maestro:/dev/ttyACM0?config={path}) "
                            f"or as port: in {str(path)!r}")
    if isinstance(config.get("profile"), str):
        try:
            config["profile"] = load_profile(config["profile"], base=path.parent)
        except HardwareError as exc:
            raise HardwareError(f"Maestro config file {str(path)!r}: {exc}") from None
    try:
        return MaestroRobot.from_config(config, **options)
    except HardwareError as exc:
        raise type(exc)(f"Maestro config file {str(path)!r}: {exc}") from None


def open_robot(device: str, **options) -> Robot:
    """The robot a device string names, not yet connected; `options` go to the driver's constructor and win
    over the device string's (`profile=` may be a name, a file or a profile dict; for maestro, keys of its
    config file, and `serial_factory`)."""
    parsed = parse_robot(device)
    scheme = parsed["scheme"]
    if scheme == "maestro":
        return _open_maestro(parsed, dict(options))
    options = dict(options)
    profile = options.pop("profile", parsed.get("profile"))
    if isinstance(profile, str):
        profile = load_profile(profile)
    if scheme == "sim":
        from render.hardware.simulated import SimulatedRobot

        profile = profile if profile is not None else load_profile(DEFAULT_SIM_PROFILE)
        settings = {"latency_ms": profile.get("latency_ms", 0.0)}
        settings.update({k: v for k, v in parsed.items() if k not in ("scheme", "profile")})
        return SimulatedRobot(profile, **{**settings, **options})
    from render.hardware.furhat import FurhatRobot

    host = f"[{parsed['host']}]" if ":" in parsed["host"] else parsed["host"]
    return FurhatRobot(profile, **{"host": host, "port": parsed["port"], **options})


__all__ = ["parse_robot", "open_robot", "describe_forms", "load_profile", "FORMS", "SCHEMES"]
