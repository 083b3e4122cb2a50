"""A Furhat robot driven through its Remote API, as the Furhat study drove it: motor trajectories become
custom gestures built from brow, blink and neck parameters.

The protocol (Furhat developer docs, "Remote API", https://docs.furhat.io/remote-api/, and the Python
client `furhat-remote-api` on PyPI that wraps the same Swagger spec): the Remote API skill, started from
the robot's web interface or the SDK launcher, serves HTTP on port 54321 without authentication.

- `GET /furhat` — "Test connection": 200 and "hello world" while the server runs (our connect and health).
- `POST /furhat/gesture?blocking=<bool>` with a JSON body `GestureDefinition`:
  `{"name": str, "frames": [Frame], "class": "furhatos.gestures.Gesture"}` (the class must be exactly that
  or the body is not parsed as a gesture); a `Frame` is `{"time": [seconds, ...], "persist": bool
  (optional), "params": {BasicParam: value}}`, where `params` may instead be `{"reset": true}`, which
  restores the parameters the gesture touched. The answer is a `Status` `{"success": bool, "message": str}`,
  HTTP 400 when the parameters are wrong. Times are seconds from the gesture's start: the value is reached
  at that time (keyframes, interpolated between). Without a reset the parameters stay at their last values.
- BasicParams: the face parameters (`BROW_UP_LEFT`, `BLINK_LEFT`, ...) take 0..1; `NECK_TILT`, `NECK_PAN`,
  `NECK_ROLL`, `GAZE_PAN`, `GAZE_TILT` take −50..50 (degrees).

How a profile's actuators become parameters: `upper.brow_left/right` → `BROW_UP_LEFT/RIGHT`,
`upper.eyelid_left/right` → `BLINK_LEFT/RIGHT` (0..1 as they are: 1 is closed in both), and head actuators
by their pose angle — `rx` (nod, positive nose down) → `NECK_TILT`, `ry` (turn) → `NECK_PAN`, `rz` (roll)
→ `NECK_ROLL` — in degrees through the actuator's `pose_range_deg`. Other channels map when the last part
of their name is a BasicParam (`lower.smile_open` → `SMILE_OPEN`), or explicitly by an actuator's
`furhat_param` key or the profile's `extra["furhat_params"][channel]`. The docs fix no sign for pan and
roll; a reversed `pose_range_deg` flips one, and `calibrate_robot` is the place to check it on the robot.

`play()` sends the trajectory as custom gestures of at most `chunk_s` seconds (frame i of a chunk at time
i/fps from the chunk's start, every frame `persist: true`, no reset, so the face holds between chunks),
each posted non-blocking when its first frame is due, counted from `start_at` without drift. It returns
once the last frame's time has come and a `GET /furhat` confirms the robot still answers. A connection
that fails or times out mid-play raises DeviceLost after an attempt at `neutral()` (a gesture that moves
every mapped parameter to its rest value and then resets).
"""
from __future__ import annotations

import copy
import math
import threading
import time

import numpy as np
import requests

from render.hardware.base import (DeviceLost, DeviceNotFound, HardwareError, PlayReport, Robot,
                                  check_trajectory, wait_until)
from render.rig import RigError
from render.robot import DEFAULT_HEAD_RANGE_DEG, servo_from_dict

REMOTE_API_PORT = 54321
GESTURE_CLASS = "furhatos.gestures.Gesture"
# The BasicParams the Remote API documents, by range.
FACE_PARAMS = (
    "EXPR_ANGER", "EXPR_DISGUST", "EXPR_FEAR", "EXPR_SAD", "SMILE_CLOSED", "SMILE_OPEN", "SURPRISE",
    "BLINK_LEFT", "BLINK_RIGHT", "BROW_DOWN_LEFT", "BROW_DOWN_RIGHT", "BROW_IN_LEFT", "BROW_IN_RIGHT",
    "BROW_UP_LEFT", "BROW_UP_RIGHT", "EYE_SQUINT_LEFT", "EYE_SQUINT_RIGHT", "LOOK_DOWN", "LOOK_LEFT",
    "LOOK_RIGHT", "LOOK_UP", "PHONE_AAH", "PHONE_B_M_P", "PHONE_BIGAAH", "PHONE_CH_J_SH", "PHONE_D_S_T",
    "PHONE_EE", "PHONE_EH", "PHONE_F_V", "PHONE_I", "PHONE_K", "PHONE_N", "PHONE_OH", "PHONE_OOH_Q", "PHONE_R",
    "PHONE_TH", "PHONE_W", "LOOK_DOWN_LEFT", "LOOK_DOWN_RIGHT", "LOOK_LEFT_LEFT", "LOOK_LEFT_RIGHT",
    "LOOK_RIGHT_LEFT", "LOOK_RIGHT_RIGHT", "LOOK_UP_LEFT", "LOOK_UP_RIGHT")
ANGLE_PARAMS = ("NECK_TILT", "NECK_PAN", "NECK_ROLL", "GAZE_PAN", "GAZE_TILT")
ANGLE_LIMIT_DEG = 50.0

CHANNEL_PARAMS = {"upper.brow_left": "BROW_UP_LEFT", "upper.brow_right": "BROW_UP_RIGHT",
                  "upper.eyelid_left": "BLINK_LEFT", "upper.eyelid_right": "BLINK_RIGHT"}
POSE_PARAMS = {"rx": "NECK_TILT", "ry": "NECK_PAN", "rz": "NECK_ROLL"}


def _actuator(name, rest=0.0, **head):
    return {"name": name, "lower": 0.0, "upper": 1.0, "rest": rest, "max_speed": None,
            "pose_channel": head.get("pose_channel"), "pose_range_deg": head.get("pose_range_deg")}


# The parameters the Furhat study animated: brows, blinks and the neck (±30° each way, centred at rest).
FURHAT_PROFILE = {
    "name": "furhat",
    "actuators": [
        _actuator("upper.brow_left"), _actuator("upper.brow_right"),
        _actuator("upper.eyelid_left"), _actuator("upper.eyelid_right"),
        _actuator("head.pan", 0.5, pose_channel="ry", pose_range_deg=[-30.0, 30.0]),
        _actuator("head.tilt", 0.5, pose_channel="rx", pose_range_deg=[-30.0, 30.0]),
        _actuator("head.roll", 0.5, pose_channel="rz", pose_range_deg=[-30.0, 30.0]),
    ],
    "latency_ms": 0.0,
    "description": "Furhat through the Remote API: BROW_UP, BLINK and NECK_PAN/TILT/ROLL gesture parameters",
    "extra": {},
}


class FurhatRobot(Robot):
    """A Furhat (or the SDK's virtual Furhat) whose Remote API skill listens at `host:port`.

    `profile` defaults to FURHAT_PROFILE. `timeout_s` bounds every request; `chunk_s` bounds the length of
    one gesture (payload size, and how long a chunk already sent keeps playing after `stop()`).
    """

    def __init__(self, profile: dict | None = None, *, host: str = "localhost", port: int = REMOTE_API_PORT,
                 timeout_s: float = 2.0, chunk_s: float = 2.0, neutral_s: float = 0.5, clock=time.monotonic):
        if not chunk_s > 0 or not timeout_s > 0 or not neutral_s > 0:
            raise HardwareError("Furhat: timeout_s, chunk_s and neutral_s must be positive seconds")
        self.profile = copy.deepcopy(profile if profile is not None else FURHAT_PROFILE)
        self.host, self.port = host, int(port)
        self.base_url = f"http://{host}:{self.port}"
        self.timeout_s, self.chunk_s, self.neutral_s = float(timeout_s), float(chunk_s), float(neutral_s)
        self.clock = clock
        self.params = self._map_params(self.profile)   # per column: (BasicParam, servo or None for 0..1)
        self.rest = np.array([a.get("rest", 0.0) for a in self.profile["actuators"]], dtype=np.float64)
        self.connected = False
        self.sent_log: list[tuple[float, int, dict]] = []   # (time posted, first frame index, gesture)
        self.neutral_attempts: list[tuple[float, str]] = []  # (time, "sent" or why it failed)
        self._session = requests.Session()
        self._stop = threading.Event()

    # --- parameters and gestures ------------------------------------------------------------------------

    @staticmethod
    def _map_params(profile: dict) -> list[tuple[str, object]]:
        explicit = (profile.get("extra") or {}).get("furhat_params") or {}
        mapped, unmapped, seen = [], [], {}
        for actuator in profile["actuators"]:
            try:
                servo = servo_from_dict(actuator)
            except RigError as error:
                raise HardwareError(f"Furhat profile {profile.get('name')!r}: {error}") from None
            suffix = servo.name.rsplit(".", 1)[-1].upper()
            param = (actuator.get("furhat_param") or explicit.get(servo.name) or CHANNEL_PARAMS.get(servo.name)
                     or POSE_PARAMS.get(servo.pose_channel)
                     or (suffix if suffix in FACE_PARAMS + ANGLE_PARAMS else None))
            if param is None:
                unmapped.append(servo.name)
                continue
            if param not in FACE_PARAMS + ANGLE_PARAMS:
                raise HardwareError(f"Furhat profile: actuator {servo.name!r} maps to {param!r}, which is not a "
                                    f"Remote API BasicParam (e.g. {', '.join(CHANNEL_PARAMS.values())}, NECK_PAN)")
            if param in seen:
                raise HardwareError(f"Furhat profile: actuators {seen[param]!r} and {servo.name!r} both drive {param}; "
                                    "map one of them elsewhere or drop it")
            seen[param] = servo.name
            if param in ANGLE_PARAMS:
                lo, hi = servo.pose_range_deg or DEFAULT_HEAD_RANGE_DEG
                if max(abs(lo), abs(hi)) > ANGLE_LIMIT_DEG:
                    raise HardwareError(f"Furhat profile: actuator {servo.name!r} spans {lo}..{hi}°, but {param} "
                                        f"takes −{ANGLE_LIMIT_DEG:g}..{ANGLE_LIMIT_DEG:g}°; narrow its pose_range_deg")
                mapped.append((param, (lo, hi)))
            else:
                mapped.append((param, None))
        if unmapped:
            raise HardwareError(f"Furhat has no gesture parameter for {', '.join(unmapped)}; give each actuator a "
                                "'furhat_param' (a Remote API BasicParam such as BROW_UP_LEFT or NECK_PAN) or "
                                "drop it from the profile")
        return mapped

    def frame_params(self, commands) -> dict[str, float]:
        """The BasicParams for one frame of (clamped) commands: 0..1 as they are, angles in degrees."""
        out = {}
        for (param, degrees), value in zip(self.params, commands):
            if degrees is None:
                out[param] = round(float(value), 4)
            else:
                lo, hi = degrees
                out[param] = round(lo + float(value) * (hi - lo), 3) + 0.0   # + 0.0: no "-0.0" in the JSON
        return out

    def gesture(self, commands, fps: float, *, name: str) -> dict:
        """The GestureDefinition playing `commands` ([T, n], clamped) at `fps` from the gesture's start."""
        frames = [{"time": [round(i / fps, 6)], "persist": True, "params": self.frame_params(row)}
                  for i, row in enumerate(commands)]
        return {"name": name, "frames": frames, "class": GESTURE_CLASS}

    def neutral_gesture(self) -> dict:
        """Every mapped parameter to its rest value over `neutral_s`, then a reset."""
        return {"name": "render-neutral",
                "frames": [{"time": [self.neutral_s], "persist": False, "params": self.frame_params(self.rest)},
                           {"time": [round(self.neutral_s + 0.1, 6)], "persist": False, "params": {"reset": True}}],
                "class": GESTURE_CLASS}

    # --- the Robot interface ----------------------------------------------------------------------------

    def connect(self) -> None:
        try:
            response = self._session.get(f"{self.base_url}/furhat", timeout=self.timeout_s)
        except requests.RequestException as error:
            raise DeviceNotFound(f"no Furhat Remote API answers at {self.host}:{self.port} ({_reason(error)}). "
                                 "Start the Remote API skill on the robot (its web interface, or the Remote API "
                                 f"button of the SDK launcher for a virtual Furhat; it listens on port "
                                 f"{REMOTE_API_PORT}) and check the robot's address") from None
        if response.status_code != 200:
            raise DeviceNotFound(f"{self.host}:{self.port} answered HTTP {response.status_code} to GET /furhat; "
                                 "is the Furhat Remote API skill what listens there?")
        self.connected = True

    def describe(self) -> dict:
        return copy.deepcopy(self.profile)

    def neutral(self) -> None:
        try:
            self._post_gesture(self.neutral_gesture())
        except requests.RequestException as error:
            self.neutral_attempts.append((self.clock(), f"failed: {_reason(error)}"))
            raise DeviceLost(f"Furhat at {self.host}:{self.port} did not take the neutral gesture "
                             f"({_reason(error)}); check the robot and its Remote API skill") from None
        except HardwareError as error:
            self.neutral_attempts.append((self.clock(), f"refused: {error}"))
            raise
        self.neutral_attempts.append((self.clock(), "sent"))

    def play(self, trajectory, fps: float, *, start_at: float | None = None) -> PlayReport:
        if not self.connected:
            raise HardwareError(f"Furhat at {self.host}:{self.port} is not connected; call connect() first "
                                "(or use it as a context manager)")
        commands, clamped = check_trajectory(trajectory, self.profile)
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise HardwareError(f"frame rate must be a positive number of frames per second, got {fps!r}")
        start = self.clock() if start_at is None else float(start_at)
        per_chunk = max(1, int(self.chunk_s * fps + 1e-9))
        self._stop.clear()
        started_at, frames = None, 0
        for chunk, first in enumerate(range(0, len(commands), per_chunk)):
            wait_until(start + first / fps, self._stop, self.clock)
            if self._stop.is_set():
                break
            block = commands[first:first + per_chunk]
            gesture = self.gesture(block, fps, name=f"render-trajectory-{chunk}")
            posted = self.clock()
            try:
                self._post_gesture(gesture)
            except requests.RequestException as error:
                self._lost(f"stopped answering at frame {first} of {len(commands)} ({_reason(error)})")
            except HardwareError:
                self._try_neutral()
                raise
            started_at = posted if started_at is None else started_at
            self.sent_log.append((posted, first, gesture))
            frames += len(block)
        if not self._stop.is_set():
            wait_until(start + len(commands) / fps, self._stop, self.clock)
            if not self._stop.is_set():
                try:
                    self._session.get(f"{self.base_url}/furhat", timeout=self.timeout_s).raise_for_status()
                except requests.RequestException as error:
                    self._lost(f"stopped answering during the last gesture ({_reason(error)})")
        return PlayReport(frames=frames, clamped=clamped, started_at=started_at if started_at is not None else start,
                          sent=commands[:frames])

    def stop(self) -> None:
        """No further gestures are sent; the one already sent (≤ chunk_s) plays out and the face holds."""
        self._stop.set()

    def health(self) -> dict:
        try:
            response = self._session.get(f"{self.base_url}/furhat", timeout=self.timeout_s)
        except requests.RequestException as error:
            return {"ok": False, "detail": f"Furhat Remote API at {self.host}:{self.port}: {_reason(error)}"}
        ok = response.status_code == 200
        return {"ok": ok, "detail": f"Furhat Remote API at {self.host}:{self.port}: HTTP {response.status_code} "
                                    f"{response.text[:60].strip()}"}

    def close(self) -> None:
        self.connected = False
        self._session.close()

    # --- internals --------------------------------------------------------------------------------------

    def _post_gesture(self, gesture: dict) -> None:
        """POST one GestureDefinition, non-blocking; raises HardwareError when the robot refuses it."""
        response = self._session.post(f"{self.base_url}/furhat/gesture", params={"blocking": "false"}, json=gesture,
                                      headers={"Accept": "application/json"}, timeout=self.timeout_s)
        try:
            status = response.json()
        except ValueError:
            status = {}
        refused = response.status_code != 200 or (isinstance(status, dict) and status.get("success") is False)
        if refused:
            message = status.get("message") if isinstance(status, dict) else None
            raise HardwareError(f"Furhat at {self.host}:{self.port} refused gesture {gesture['name']!r}: HTTP "
                                f"{response.status_code} {message or response.text[:200]!r}")

    def _try_neutral(self) -> str:
        try:
            self.neutral()
            return "it was sent to neutral"
        except HardwareError:
            return "neutral could not be sent either"

    def _lost(self, what: str):
        after = self._try_neutral()
        raise DeviceLost(f"Furhat at {self.host}:{self.port} {what}; {after}. Check the robot and its Remote API "
                         "skill, then replay the stimulus from its start")



def _reason(error: Exception) -> str:
    if isinstance(error, requests.Timeout):
        return "timed out"
    if isinstance(error, requests.ConnectionError):
        text = str(error)
        for phrase, reason in (("Connection refused", "connection refused"),
                               ("RemoteDisconnected", "closed the connection without answering"),
                               ("Connection reset", "connection reset"),
                               ("Name or service not known", "unknown host name")):
            if phrase in text:
                return reason
        return "connection failed"
    return type(error).__name__


__all__ = ["FurhatRobot", "FURHAT_PROFILE", "FACE_PARAMS", "ANGLE_PARAMS", "REMOTE_API_PORT", "GESTURE_CLASS"]
