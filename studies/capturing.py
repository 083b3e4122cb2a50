"""Filming a study's `robot_physical` cells on the hardware worker: which cells are captured, the motor commands
one cell plays, the lock that keeps one robot out of two captures at once, and the body of a capture (open the
robot and camera, play and film, register the checked video under an opaque token). Also the robot's calibration
(stored as a RobotRecord) and the robot + camera health check.

A captured cell reuses RenderJob (utterance × condition × embodiment="robot_physical", in the study's variant of
render settings, as rendered cells: studies/variants.py): progress and failures show on the study's dashboard
like renders. Its motion is the condition's (`rendering.condition_motion`) turned
into the robot's motor commands by the inverse model exactly as for the simulated robot
(`rendering.robot_motion`); the inverse model must drive the robot that is connected (`motors:<its profile
name>`). The filming, synchronisation and encoding live in render/hardware/capture.py (no Django).

The lock is `fcntl.flock` on `VAR_DIR/locks/robot-<name>.lock`, taken before the robot is connected and held
until it is closed; the holder writes its pid into the file so a refused capture can say who holds it.
"""
from __future__ import annotations

import json
import os
import re
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from django.conf import settings as django_settings

from . import rendering
from .models import Embodiment, RenderJob, RobotRecord, Stimulus
from .spec import RENDER_KEYS

CAPTURE_MAKER_VERSION = 1
LOCK_WAIT_S = 10.0      # how long a capture waits for a robot another capture is using before it gives up


class CaptureRequestError(ValueError):
    """A capture that cannot be done as asked (a cell that is not captured, a mismatched robot); the message
    says why and what to do."""


class RobotBusy(RuntimeError):
    """The robot is being driven by another capture (another process holds its lock)."""


# --- which cells ----------------------------------------------------------------------------------------


def capture_cells(spec: dict) -> list[tuple]:
    """The study's cells (utterance, condition, embodiment) that are filmed on the physical robot."""
    return [cell for cell in rendering.study_cells(spec) if rendering.is_captured(cell[1], cell[2])]


def cell_name(utterance, condition) -> str:
    """How a cell is named on the command line: UTTERANCE/CONDITION."""
    return f"{utterance.name}/{condition.name}"


def capture_jobs_plan(spec: dict, stimuli: list[str] | None = None, retry_failed: bool = False) -> list[RenderJob]:
    """One job per robot_physical cell of the study (or of the cells named UTTERANCE/CONDITION in `stimuli`);
    cells with a stimulus get a done job pointing at it, failed jobs are queued again only when `retry_failed`.
    Names that are not robot_physical cells of the study are refused before anything changes."""
    cells = capture_cells(spec)
    if stimuli:
        wanted = list(dict.fromkeys(s.strip().strip("/") for s in stimuli))
        known = {cell_name(u, c): (u, c, e) for u, c, e in cells}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            listed = ", ".join(sorted(known)[:12]) + (" …" if len(known) > 12 else "")
            raise CaptureRequestError(
                f"{', '.join(unknown)}: not a robot_physical cell of study {spec['slug']}; name cells as "
                f"UTTERANCE/CONDITION, one of: {listed or 'none (the study has no robot_physical embodiment)'}")
        cells = [known[w] for w in wanted]
    settings_ = rendering.job_settings(spec)
    return [rendering.job_for_cell(u, c, e, settings_, retry_failed=retry_failed) for u, c, e in cells]


def captures_pending(spec: dict) -> int:
    """How many robot_physical cells of the study have no stimulus yet in its variant (what `manage.py capture`
    would film)."""
    settings_ = rendering.job_settings(spec)
    return sum(1 for u, c, e in capture_cells(spec)
               if not Stimulus.objects.filter(utterance=u, condition=c, embodiment=e,
                                              variant=rendering.cell_variant(settings_, c.kind)).exists())


# --- one cell's motion --------------------------------------------------------------------------------------


@dataclass
class CellMotion:
    """What a cell plays on the robot: motor commands [T, n] in the profile's actuator order at `fps`, the
    on-screen instruction and expected answer of an attention check (or catch trial), and the recipe."""

    commands: object
    fps: float
    overlay: str | None
    expected: dict | None
    recipe: dict


def cell_trajectory(job: RenderJob, profile: dict) -> CellMotion:
    """The motion a job's cell plays on the robot described by `profile` (see CellMotion)."""
    condition, utterance = job.condition, job.utterance
    if not rendering.is_captured(condition, job.embodiment):
        raise CaptureRequestError(f"{cell_name(utterance, condition)} ({job.embodiment}) is not filmed on the robot; "
                                  "make it with `manage.py render_study`")
    opts = {**RENDER_KEYS, **job.settings}
    fps = float(opts["fps"])
    seed = int(condition.params.get("seed", 0)) if condition.params else 0
    clip, recipe = rendering.condition_motion(condition, utterance, fps=fps, seed=seed)
    clip, overlay, expected = rendering.cell_extras(condition, utterance, job.embodiment, clip, recipe, seed=seed,
                                                    opts=opts)
    motors, model = rendering.robot_motion(clip, opts, embodiment=Embodiment.ROBOT_PHYSICAL)
    drives = motors.layout.split(":", 1)[1]
    if drives != profile["name"]:
        raise CaptureRequestError(
            f"the motion of {cell_name(utterance, condition)} is for robot {drives!r} ({motors.layout}, through "
            f"inverse model {model.name}), but the robot connected is {profile['name']!r}: train an inverse model "
            f"for {profile['name']!r} (`manage.py train --model inverse --pairs FILE`, with robot "
            f"{profile['name']!r} in the pairs) and name it in stimuli.render.robot_model, or connect robot {drives!r}")
    names = [a["name"] for a in profile["actuators"]]
    missing = [n for n in names if n not in motors.channels]
    if missing:
        raise CaptureRequestError(
            f"inverse model {model.name} gives no commands for actuator(s) {', '.join(missing)} of robot "
            f"{profile['name']!r} (it drives {', '.join(motors.channels)}); retrain it on pairs of this robot")
    commands = motors.values[:, [list(motors.channels).index(n) for n in names]]
    return CellMotion(commands=commands, fps=fps, overlay=overlay, expected=expected,
                      recipe={"condition": condition.name, "condition_kind": condition.kind, "seed": seed,
                              "fps": fps, "inverse_model": model.name, **recipe})


# --- the robot's lock ---------------------------------------------------------------------------------------


def _lock_path(name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "robot"
    return Path(django_settings.VAR_DIR) / "locks" / f"robot-{safe}.lock"


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows: a byte-range lock on the file's first byte does the same
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextmanager
def robot_lock(name: str, *, wait_s: float = LOCK_WAIT_S):
    """Hold robot `name` for one capture (or calibration, or health probe): waits up to `wait_s` seconds for
    another holder to finish, then raises RobotBusy naming the holder's pid. Released when the block ends
    (and by the system when the process dies, so a crashed capture never leaves the robot locked)."""
    path = _lock_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + max(0.0, wait_s)
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                try:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                except OSError:
                    holder = "unknown"
                raise RobotBusy(f"robot {name} is busy with another capture (pid {holder}); wait for it to finish "
                                f"or stop that process, then run again (lock file {path})")
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)   # unlocked when the descriptor closes below
    finally:
        os.close(fd)


# --- devices ------------------------------------------------------------------------------------------------


def check_devices(robot_device: str, camera_device: str, speaker_device: str | None = None) -> None:
    """Raise HardwareError (DeviceNotFound for an unknown form) unless both device strings (and the speaker's,
    if given) are well formed; opens nothing."""
    from render.hardware.camera import parse_device
    from render.hardware.devices import parse_robot

    parse_robot(robot_device)
    parse_device(camera_device)
    if speaker_device:
        from render.hardware.capture import FFmpegSpeaker

        FFmpegSpeaker(speaker_device)


def public_device(device: str | None) -> str | None:
    """A device string as it may be stored and shown: any user:password@ and secret-looking query values
    (password, token, key, secret) are dropped."""
    if not device:
        return device
    scheme, sep, rest = device.partition(":")
    rest = re.sub(r"^(/*)[^/@\s=]+@", r"\1", rest)
    return scheme + sep + re.sub(r"(?i)\b(password|passwd|pass|token|key|secret)=[^&,]*", r"\1=…", rest)


def _open_robot(robot_device: str):
    from render.hardware.devices import open_robot

    robot = open_robot(robot_device)
    return robot, robot.describe()


@contextmanager
def _connected(robot, camera_device: str):
    """The robot connected and the camera opened (a sim camera films this robot); the robot goes back to
    neutral and is closed at the end, whatever happened."""
    robot.connect()
    try:
        yield _open_camera(camera_device, robot)
    finally:
        _release(robot)


def _open_camera(camera_device: str, robot):
    """The camera a device string names; a simulated camera films `robot`."""
    from render.hardware.camera import open_camera, parse_device

    sim = parse_device(camera_device)["scheme"] == "sim"
    return open_camera(camera_device, robot=robot if sim else None)


def _release(robot) -> None:
    try:
        robot.neutral()
    except Exception:  # a robot that is gone cannot go to neutral; closing is still attempted
        pass
    robot.close()


def _robot_record_seen(profile: dict, robot_device: str) -> RobotRecord:
    record, _ = RobotRecord.objects.update_or_create(
        name=profile["name"], defaults={"device": public_device(robot_device), "profile": _plain(profile)})
    return record


def _plain(value):
    """A JSON-safe copy (numpy numbers and arrays, paths) for JSONFields."""
    return json.loads(json.dumps(value, default=lambda obj: obj.tolist() if hasattr(obj, "tolist") else str(obj)))


# --- one capture --------------------------------------------------------------------------------------------


def capture_settings_for(spec_or_job_settings: dict, overrides: dict | None = None):
    """The CaptureSettings of a capture: the study's frame rate (so captured and rendered stimuli share it)
    and `overrides` (e.g. {"tail_s": 1.0, "size": [640, 360]}); raises CaptureError on bad values."""
    from render.hardware.capture import CaptureSettings

    fps = float({**RENDER_KEYS, **spec_or_job_settings}["fps"])
    return CaptureSettings.from_dict({"fps": fps, **(overrides or {})})


def capture_job_run(*, job_id: int, robot_device: str, camera_device: str, settings: dict | None = None,
                    speaker_device: str | None = None, lock_wait_s: float = LOCK_WAIT_S, cancel=None,
                    progress=None) -> RenderJob:
    """Film the job's cell on the robot and register the stimulus in the job's variant (idempotent: a cell with a
    stimulus in that variant is done).

    `settings` are CaptureSettings overrides (tail_s, size, retries, timeout_s, crf, marker). A busy robot
    (RobotBusy) or an interrupt leaves the job queued; any other failure marks it failed with the reason and is
    raised; nothing is registered then and no file is left in MEDIA_ROOT. A second delivery of the same job
    waits for the first (rendering.job_lock), then finds the stimulus made."""
    with rendering.job_lock(job_id):
        return _capture_job_run(job_id=job_id, robot_device=robot_device, camera_device=camera_device,
                                settings=settings, speaker_device=speaker_device, lock_wait_s=lock_wait_s,
                                cancel=cancel, progress=progress)


def _capture_job_run(*, job_id, robot_device, camera_device, settings, speaker_device, lock_wait_s, cancel,
                     progress) -> RenderJob:
    from render.hardware.capture import capture_stimulus, speaker_for

    from . import services

    progress = progress or (lambda stage: None)
    job, done = rendering.job_claim(job_id)
    if done:
        return job
    previous_attempts = job.attempts - 1
    out = Path(django_settings.VAR_DIR) / "cache" / "captures" / f"{uuid.uuid4().hex}.mp4"
    try:
        capture_settings = capture_settings_for(job.settings, settings)
        progress("motion")
        robot, profile = _open_robot(robot_device)
        motion = cell_trajectory(job, profile)
        audio = Path(django_settings.MEDIA_ROOT) / job.utterance.audio_path
        with robot_lock(profile["name"], wait_s=lock_wait_s):
            record = _robot_record_seen(profile, robot_device)
            progress("connecting")
            with _connected(robot, camera_device) as camera:
                out.parent.mkdir(parents=True, exist_ok=True)
                result = capture_stimulus(
                    robot, camera, motion.commands, motion.fps, audio, out, overlay_text=motion.overlay,
                    audio_offset_s=float(job.utterance.metadata.get("audio_offset_s", 0.0)),
                    settings=capture_settings, speaker=speaker_for(camera, speaker_device), cancel=cancel,
                    progress=progress, calibration=record.calibration or None)
        progress("registering")
        recipe = _plain({
            **motion.recipe,   # the condition's recipe first: the capture's own keys below win
            "maker": "capture", "maker_version": CAPTURE_MAKER_VERSION, "embodiment": job.embodiment,
            "robot": profile["name"], "robot_device": public_device(robot_device),
            "camera_device": public_device(camera_device), "speaker_device": public_device(speaker_device),
            "capture": capture_settings.to_dict(), "sync": result.sync, "attempts": result.attempts,
            "play": {k: result.play.get(k) for k in ("frames", "clamped")},
            "recording": {k: result.recording.get(k) for k in ("frames", "dropped", "duration_s", "has_audio")},
            "calibrated_at": record.calibrated_at.isoformat() if record.calibrated_at else None,
            "captured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        stimulus = services.stimulus_register(utterance=job.utterance, condition=job.condition,
                                              embodiment=job.embodiment, variant=job.variant,
                                              source_path=result.path, recipe=recipe,
                                              expected_answer=motion.expected)
    except (RobotBusy, KeyboardInterrupt):
        # Not the cell's failure (another capture holds the robot; the researcher pressed Ctrl-C): it stays queued.
        RenderJob.objects.filter(pk=job.pk).update(status=RenderJob.Status.QUEUED, attempts=previous_attempts)
        raise
    except BaseException as exc:
        RenderJob.objects.filter(pk=job.pk).update(status=RenderJob.Status.FAILED, error=_reason(exc))
        raise
    finally:
        out.unlink(missing_ok=True)   # registered (copied into MEDIA_ROOT) or abandoned: not kept here
    RenderJob.objects.filter(pk=job.pk).update(status=RenderJob.Status.DONE, stimulus=stimulus, error="")
    job.refresh_from_db()
    return job


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 2000 else text[:2000] + " …"


# --- calibration and health ---------------------------------------------------------------------------------


def robot_calibrate(*, robot_device: str, camera_device: str, repeats: int = 3, actuators: list[str] | None = None,
                    speaker_device: str | None = None, lock_wait_s: float = LOCK_WAIT_S,
                    progress=None) -> RobotRecord:
    """Measure the robot's latency and actuator responses (of `actuators`, default all) on camera and store them
    on its RobotRecord (created when it is new), replacing the previous calibration; returns the record."""
    from render.hardware.capture import calibrate, speaker_for

    robot, profile = _open_robot(robot_device)
    with robot_lock(profile["name"], wait_s=lock_wait_s):
        with _connected(robot, camera_device) as camera:
            figures = calibrate(robot, camera, repeats=repeats, actuators=actuators or None,
                                speaker=speaker_for(camera, speaker_device), progress=progress)
        record, _ = RobotRecord.objects.update_or_create(
            name=profile["name"],
            defaults={"device": public_device(robot_device), "profile": _plain(profile),
                      "calibration": _plain(figures), "calibrated_at": datetime.now(timezone.utc)})
    return record


def hardware_check(*, robot_device: str, camera_device: str, lock_wait_s: float = 0.0) -> dict:
    """Whether the robot and the camera answer now: {"ok", "robot": {"ok", "detail"}, "camera": {…}, "name",
    "busy"}. A robot another capture holds is reported busy, not probed (probing would disturb that capture)."""
    from render.hardware.capture import health

    robot, profile = _open_robot(robot_device)
    try:
        with robot_lock(profile["name"], wait_s=lock_wait_s):
            connected, robot_error = False, None
            try:
                robot.connect()
                connected = True
            except Exception as exc:  # a robot that does not connect: that is the answer
                robot_error = f"{type(exc).__name__}: {exc}"
            try:
                try:
                    camera = _open_camera(camera_device, robot)
                except Exception as exc:
                    camera = _Unopened(exc)
                report = health(robot, camera)
            finally:
                if connected:
                    _release(robot)
            if robot_error:
                report["robot"] = {"ok": False, "detail": robot_error}
    except RobotBusy as exc:
        report = {"robot": {"ok": False, "detail": str(exc)}, "busy": True,
                  "camera": {"ok": False, "detail": "not probed: a capture is using the robot and its camera"}}
    report["ok"] = bool(report["robot"]["ok"] and report["camera"]["ok"])
    return {"busy": False, **report, "name": profile["name"]}


class _Unopened:
    """A camera that could not be opened, answering health() with why."""

    def __init__(self, error: Exception):
        self.error = error

    def health(self) -> dict:
        return {"ok": False, "detail": f"{type(self.error).__name__}: {self.error}"}
