"""The simulated robot of render/robot.py driven in real time, behind the same `Robot` interface as the
physical drivers, so the capture pipeline, its sync checks and its fault handling can be exercised (and
benchmarked) without a robot: a simulated camera films it through `state_at(t)`.

What it models
--------------
- Sending: `play()` sends frame i at `start_at + i/fps` (deadlines counted from the start, so lateness never
  accumulates); each send is logged with the time it really went out (`sent_log`).
- Link delay: each command takes effect `latency_ms` plus a jitter after it was sent. The jitter is drawn
  from a normal distribution with σ = `jitter_ms` truncated at 0 (a half-normal: mean σ·√(2/π), standard
  deviation σ·√(1 − 2/π)), from a generator seeded with `seed`, one draw per command in the order sent,
  each command delayed on its own: `effective_log[k]`, when `sent_log[k]` took effect, is exactly its send
  time + latency + its draw. With σ well under a frame period (as on real links) commands land in order; a
  larger σ can let an older command land after a newer one, and it then holds until the next one lands.
  The constructor's `latency_ms` is the whole command-to-motion delay: the profile's own `latency_ms` (and
  any per-actuator latency) is not added to it, and `describe()` reports the simulated figure.
- Servos: the continuous-time version of `render.robot.simulate_servos`. Between commands each actuator
  moves towards the latest effective command c with dx/dt = clip((c − x)/τ, −max_speed, +max_speed),
  τ the actuator's `time_constant_ms` (no lag when 0; `servo_from_dict` reads it as simulate_servos does)
  and `max_speed` in command units per second (unlimited when None). This is solved exactly per segment
  (a ramp at max_speed, then an exponential approach), so `state_at` is exact at any instant, not only at
  frame times. It differs from simulate_servos only by discretisation: there frame i already moves towards
  command i, here the servo acts on a command from the instant it takes effect. Before any command the
  robot stands at rest.
- Faults: with `fail_after_s`, the link drops that many seconds after `connect()`. From then on nothing
  reaches the robot: commands that had not taken effect are lost (`effective_log` holds None for them),
  the controller's failsafe returns every actuator to rest (as a Maestro's serial timeout does), a play
  still running raises DeviceLost at its next frame after trying `neutral()` (the attempt is logged in
  `neutral_log`), and `health()` reports the loss until `connect()` is called again.
"""
from __future__ import annotations

import bisect
import copy
import math
import threading
import time

import numpy as np

from render.hardware.base import DeviceLost, HardwareError, PlayReport, Robot, check_trajectory, wait_until
from render.robot import servo_from_dict

NEUTRAL_FRAME = -1   # the frame index `sent_log` gives a neutral() command


class SimulatedRobot(Robot):
    """A simulated robot with link latency, seeded jitter, servo speed limits and an optional disconnect.

    `profile` is a robot profile dict (`RobotProfile.to_dict()`); `clock` gives seconds on the
    `time.monotonic()` scale (every logged time is on it).
    """

    def __init__(self, profile: dict, *, latency_ms: float = 0.0, jitter_ms: float = 0.0, seed: int = 0,
                 fail_after_s: float | None = None, clock=time.monotonic):
        for label, value in (("latency_ms", latency_ms), ("jitter_ms", jitter_ms)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise HardwareError(f"simulated robot: {label} must be a number ≥ 0, got {value!r}")
        if fail_after_s is not None and not (math.isfinite(fail_after_s) and fail_after_s >= 0):
            raise HardwareError(f"simulated robot: fail_after_s must be ≥ 0 seconds or None, got {fail_after_s!r}")
        self.profile = copy.deepcopy(profile)
        self._servos = [servo_from_dict(a) for a in self.profile["actuators"]]
        self.rest = np.array([s.rest for s in self._servos], dtype=np.float64)
        self._max_speed = np.array([s.max_speed if s.max_speed is not None else np.inf for s in self._servos])
        self._tau = np.array([s.time_constant_ms / 1000.0 for s in self._servos])
        self.latency_s = float(latency_ms) / 1000.0
        self.jitter_s = float(jitter_ms) / 1000.0
        self.fail_after_s = fail_after_s
        self.clock = clock
        self._rng = np.random.default_rng(seed)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self.connected = False
        self.connected_at: float | None = None
        self.link_lost_at: float | None = None   # when the current connection drops (None: never)

        self.sent_log: list[tuple[float, int, np.ndarray]] = []   # (time sent, frame index, commands)
        self.effective_log: list[float | None] = []               # when each took effect; None: lost
        self.neutral_log: list[tuple[float, str]] = []            # (time, what became of the attempt)
        # The command timeline the servos follow: sorted (time, sequence number, target); `_positions[k]`
        # is where the actuators stand when event k takes effect (computed lazily, front to back).
        self._events: list[tuple[float, int, np.ndarray]] = []
        self._positions: list[np.ndarray] = []
        self._sequence = 0

    # --- the Robot interface ----------------------------------------------------------------------------

    def connect(self) -> None:
        with self._lock:
            now = self.clock()
            self.connected, self.connected_at, self.link_lost_at = True, now, None
            if self.fail_after_s is not None:
                self.link_lost_at = now + self.fail_after_s
                self._add_event(self.link_lost_at, self.rest.copy())   # the controller's failsafe

    def describe(self) -> dict:
        profile = copy.deepcopy(self.profile)
        profile["latency_ms"] = self.latency_s * 1000.0
        return profile

    def neutral(self) -> None:
        with self._lock:
            now = self.clock()
            if self._lost(now):
                self.neutral_log.append((now, "link lost: not sent; the controller's failsafe holds rest"))
                return
            self._require_connection()
            self._send(now, NEUTRAL_FRAME, self.rest.copy())
            self.neutral_log.append((now, "sent"))

    def play(self, trajectory, fps: float, *, start_at: float | None = None) -> PlayReport:
        if self._lost(self.clock()):
            self.neutral()
        self._require_connection()
        commands, clamped = check_trajectory(trajectory, self.profile)
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise HardwareError(f"frame rate must be a positive number of frames per second, got {fps!r}")
        start = self.clock() if start_at is None else float(start_at)
        self._stop.clear()
        started_at = None
        frames = 0
        for i, row in enumerate(commands):
            wait_until(start + i / fps, self._stop, self.clock)
            if self._stop.is_set():
                break
            with self._lock:
                now = self.clock()
                if self._lost(now):
                    lost_at = self.link_lost_at
                else:
                    lost_at = None
                    self._send(now, i, row.copy())
            if lost_at is not None:
                self.neutral()
                raise DeviceLost(f"simulated robot {self.profile['name']!r} lost its link "
                                 f"{lost_at - self.connected_at:.3f} s after connect(), before frame {i} of "
                                 f"{len(commands)}; its failsafe returned it to rest. connect() again and "
                                 "replay the stimulus from its start")
            started_at = now if started_at is None else started_at
            frames += 1
        return PlayReport(frames=frames, clamped=clamped, started_at=started_at if started_at is not None else start,
                          sent=commands[:frames])

    def stop(self) -> None:
        self._stop.set()

    def health(self) -> dict:
        now = self.clock()
        if not self.connected:
            return {"ok": False, "detail": f"simulated robot {self.profile['name']!r} is not connected"}
        if self._lost(now):
            return {"ok": False, "detail": f"simulated robot {self.profile['name']!r} lost its link "
                                           f"{now - self.link_lost_at:.3f} s ago; connect() again"}
        return {"ok": True, "detail": f"simulated robot {self.profile['name']!r}: latency "
                                      f"{self.latency_s * 1000:.0f} ms, jitter σ {self.jitter_s * 1000:.0f} ms"}

    def close(self) -> None:
        with self._lock:
            now = self.clock()
            if self.link_lost_at is not None and self.link_lost_at > now:
                # The link is closed before it could drop: the pending failsafe never happens.
                self._events = [e for e in self._events if not (e[0] == self.link_lost_at and e[0] > now)]
                self._positions = self._positions[:0]
            self.connected, self.link_lost_at = False, None

    # --- the physical state -----------------------------------------------------------------------------

    def state_at(self, t: float) -> np.ndarray:
        """Actuator positions [n] (normalised commands) at time `t` (on the clock's scale)."""
        with self._lock:
            k = bisect.bisect_right(self._events, (t, math.inf)) - 1
            if k < 0:
                return self.rest.copy()
            while len(self._positions) <= k:
                j = len(self._positions)
                if j == 0:
                    self._positions.append(self.rest.copy())
                else:
                    then, _, target = self._events[j - 1]
                    self._positions.append(self._advance(self._positions[j - 1], target, self._events[j][0] - then))
            then, _, target = self._events[k]
            return self._advance(self._positions[k], target, t - then)

    def _advance(self, position: np.ndarray, target: np.ndarray, dt: float) -> np.ndarray:
        """Where actuators at `position` stand `dt` seconds later, moving towards a fixed `target`."""
        out = np.empty_like(position)
        if dt <= 0:
            return position.copy()
        for j, (x, c, speed, tau) in enumerate(zip(position, target, self._max_speed, self._tau)):
            gap, sign = abs(c - x), math.copysign(1.0, c - x)
            if tau == 0:
                out[j] = c if speed * dt >= gap else x + sign * speed * dt
                continue
            band = speed * tau          # within this distance the lag, not the speed limit, sets the pace
            ramp = (gap - band) / speed if gap > band else 0.0
            if dt <= ramp:
                out[j] = x + sign * speed * dt
            else:
                out[j] = c - sign * min(gap, band) * math.exp(-(dt - ramp) / tau)
        return out

    # --- internals --------------------------------------------------------------------------------------

    def _require_connection(self) -> None:
        if self._lost(self.clock()):
            raise DeviceLost(f"simulated robot {self.profile['name']!r} lost its link; connect() again")
        if not self.connected:
            raise HardwareError(f"simulated robot {self.profile['name']!r} is not connected; call connect() "
                                "first (or use it as a context manager)")

    def _lost(self, now: float) -> bool:
        return self.connected and self.link_lost_at is not None and now >= self.link_lost_at

    def _send(self, now: float, frame: int, target: np.ndarray) -> None:
        delay = self.latency_s + (abs(self._rng.normal(0.0, self.jitter_s)) if self.jitter_s > 0 else 0.0)
        effective = now + delay
        self.sent_log.append((now, frame, target))
        if self.link_lost_at is not None and effective > self.link_lost_at:
            self.effective_log.append(None)           # still in flight when the link dropped
            return
        self.effective_log.append(effective)
        self._add_event(effective, target)

    def _add_event(self, when: float, target: np.ndarray) -> None:
        event = (when, self._sequence, target)
        self._sequence += 1
        k = bisect.bisect_right(self._events, (when, event[1]))
        self._events.insert(k, event)
        del self._positions[k:]     # positions after the new event must be recomputed



__all__ = ["SimulatedRobot", "NEUTRAL_FRAME"]
