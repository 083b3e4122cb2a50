"""`manage.py capture STUDY --robot DEVICE --camera DEVICE` — film every robot_physical stimulus a study needs
that does not exist yet, on the robot and camera plugged into this machine; `--check` only probes them.

Takes the study YAML or the slug of a loaded study (as render_study does). Captures here, one at a time, with a
progress bar (captures run in real time: each takes its speech's length plus a few seconds), or with
`--background` queues one `studies.tasks.hardware_capture` task per stimulus on the `hardware` queue (the
study's dashboard shows progress). A failed capture is reported with its reason; `--retry-failed` tries the
failed ones again. `--check` prints the robot's and the camera's health and exits 0 when both answer, 1 if not.
"""
import re

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from studies import capturing, rendering
from studies.management.commands.render_study import study_spec
from studies.models import RenderJob


def _size(text: str) -> list[int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not match:
        raise CommandError(f"--size must be WIDTHxHEIGHT in pixels, both even (e.g. 640x480), got {text!r}")
    return [int(match[1]), int(match[2])]


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _device_missing(exc: BaseException) -> bool:
    """Whether a capture failed because the robot or camera is not there (not because of the cell)."""
    from render.hardware.base import DeviceNotFound

    return isinstance(exc, DeviceNotFound) or isinstance(exc.__cause__, DeviceNotFound)


def _device_help() -> str:
    from render.hardware.devices import describe_forms

    return "; ".join(describe_forms())


class Command(BaseCommand):
    help = ("Film the robot_physical stimuli of a study (YAML file or slug) that do not exist yet on a robot and "
            "camera; reports failures and retries. --check probes the robot and camera only.")

    def add_arguments(self, parser):
        parser.add_argument("study", nargs="?", help="the study YAML file, or the slug of a loaded study")
        parser.add_argument("--robot", help=f"robot device: {_device_help()}")
        parser.add_argument("--camera", help="camera device: v4l2:/dev/video0[?audio=alsa:hw:1,0], "
                                             "avfoundation:0:1, dshow:video=NAME:audio=NAME, file:PATH, sim[:…]")
        parser.add_argument("--speaker", help="sound output for the speech and the sync click: alsa:NAME or "
                                              "pulse:NAME (default alsa:default; a sim camera hears its own)")
        parser.add_argument("--stimuli", nargs="+", metavar="UTT/COND",
                            help="capture only these cells (utterance/condition), e.g. syn000/ground_truth")
        parser.add_argument("--retry-failed", action="store_true", help="capture failed stimuli again")
        parser.add_argument("--background", action="store_true",
                            help="queue on the hardware worker (queue `hardware`) and return")
        parser.add_argument("--tail", type=float, metavar="S",
                            help="seconds the robot holds after the last frame (default 0.8; more than its latency)")
        parser.add_argument("--size", metavar="WxH", help="stimulus size in pixels (default: the camera's)")
        parser.add_argument("--lock-wait", type=float, default=capturing.LOCK_WAIT_S, metavar="S",
                            help="seconds to wait for a robot another capture is using (default %(default)s)")
        parser.add_argument("--check", action="store_true",
                            help="print the robot's and camera's health and exit 0 (both ready) or 1")

    def handle(self, *args, **opts):
        from render.hardware.base import HardwareError

        if not opts["robot"] or not opts["camera"]:
            raise CommandError(f"give the robot and the camera: --robot DEVICE ({_device_help()}) and --camera "
                               "DEVICE (e.g. v4l2:/dev/video0?audio=alsa:hw:1,0, or sim)")
        try:
            capturing.check_devices(opts["robot"], opts["camera"], opts["speaker"])
        except HardwareError as exc:
            raise CommandError(_one_line(exc)) from None
        if opts["check"]:
            return self._check(opts)
        if not opts["study"]:
            raise CommandError("name the study to capture (its YAML file or slug), or pass --check")
        overrides = {}
        if opts["tail"] is not None:
            overrides["tail_s"] = opts["tail"]
        if opts["size"]:
            overrides["size"] = _size(opts["size"])
        spec = study_spec(opts["study"], self.stderr)
        try:
            capturing.capture_settings_for(rendering.render_settings(spec), overrides)
            jobs = capturing.capture_jobs_plan(spec, stimuli=opts["stimuli"], retry_failed=opts["retry_failed"])
        except (HardwareError, capturing.CaptureRequestError, rendering.RenderRequestError) as exc:
            raise CommandError(_one_line(exc)) from None
        if not jobs:
            raise CommandError(f"study {spec['slug']} has no robot_physical stimuli to capture (its embodiments: "
                               f"{', '.join(spec['stimuli']['embodiments'])})")
        todo = [j for j in jobs if j.status == RenderJob.Status.QUEUED]
        failed_before = [j for j in jobs if j.status == RenderJob.Status.FAILED]
        self.stdout.write(f"{spec['slug']}: {len(jobs)} robot_physical stimuli, "
                          f"{len(jobs) - len(todo) - len(failed_before)} made, {len(todo)} to capture, "
                          f"{len(failed_before)} failed before")
        if opts["background"]:
            from studies.tasks import hardware_capture

            for job in todo:
                result = hardware_capture.delay(job.pk, opts["robot"], opts["camera"], overrides, opts["speaker"])
                RenderJob.objects.filter(pk=job.pk).update(task_id=result.id)
            self.stdout.write(f"queued {len(todo)} capture tasks on the hardware queue; the study's dashboard "
                              "shows progress")
            return
        failures = []
        with tqdm(todo, desc="capturing", unit="stimulus", disable=None) as bar:
            for index, job in enumerate(bar):
                bar.set_postfix_str(capturing.cell_name(job.utterance, job.condition))
                try:
                    capturing.capture_job_run(
                        job_id=job.pk, robot_device=opts["robot"], camera_device=opts["camera"], settings=overrides,
                        speaker_device=opts["speaker"], lock_wait_s=opts["lock_wait"],
                        progress=lambda stage, job=job: bar.set_postfix_str(
                            f"{capturing.cell_name(job.utterance, job.condition)}: {stage}"))
                except capturing.RobotBusy as exc:
                    raise CommandError(_one_line(exc)) from None
                except Exception as exc:  # recorded on the job; reported together below
                    failures.append((job, exc))
                    if _device_missing(exc):  # every other capture would fail the same way: stop here
                        self.stderr.write(f"  stopped: the robot or camera is not there; {len(todo) - index - 1} "
                                          "captures not tried")
                        break
                except KeyboardInterrupt:
                    cell = capturing.cell_name(job.utterance, job.condition)
                    raise CommandError(f"interrupted while capturing {cell}; the robot was sent to neutral and the "
                                       "stimulus stays queued; run again to go on") from None
        failures += [(j, None) for j in failed_before]
        for job, _exc in failures:
            job.refresh_from_db()
            self.stderr.write(f"  failed: {job.utterance.name} / {job.condition.name} / {job.embodiment}: {job.error}")
        if failures:
            raise CommandError(f"{len(failures)} stimuli could not be captured (reasons above); fix them and run "
                               "again with --retry-failed")
        self.stdout.write(f"{spec['slug']}: every robot_physical stimulus is captured")

    def _check(self, opts):
        from render.hardware.base import HardwareError

        try:
            report = capturing.hardware_check(robot_device=opts["robot"], camera_device=opts["camera"],
                                              lock_wait_s=0.0)
        except HardwareError as exc:
            raise CommandError(_one_line(exc)) from None
        for part, label in (("robot", f"robot {report['name']}"), ("camera", "camera")):
            state = "ok" if report[part]["ok"] else "NOT READY"
            self.stdout.write(f"{label}: {state} — {report[part]['detail']}")
        if report["busy"]:
            raise CommandError(_one_line(report["robot"]["detail"]))
        if not report["ok"]:
            broken = [p for p in ("robot", "camera") if not report[p]["ok"]]
            raise CommandError(f"{' and '.join(broken)} not ready: "
                               + "; ".join(_one_line(report[p]["detail"]) for p in broken))
        self.stdout.write("robot and camera are ready")
