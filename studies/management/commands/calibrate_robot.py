"""`manage.py calibrate_robot --robot DEVICE --camera DEVICE` — measure a robot on camera and store the figures.

Plays a few marker impulses (a click with a blink) and one step per actuator while the camera films, then
prints the robot's end-to-end latency (command → visible motion, against the click the camera heard) and each
actuator's latency, rise time and speed, and stores them on the robot's RobotRecord (one per profile name), where
captures read the latency when they cannot see their marker.
"""
from django.core.management.base import BaseCommand, CommandError

from studies import capturing
from studies.management.commands.capture import _device_help


class Command(BaseCommand):
    help = "Measure a robot's latency and actuator responses on camera; prints them and stores them (RobotRecord)."

    def add_arguments(self, parser):
        parser.add_argument("--robot", required=True, help=f"robot device: {_device_help()}")
        parser.add_argument("--camera", required=True,
                            help="camera device with a microphone: v4l2:/dev/video0?audio=alsa:hw:1,0, "
                                 "avfoundation:0:1, dshow:video=NAME:audio=NAME, or sim")
        parser.add_argument("--speaker", help="sound output for the clicks: alsa:NAME or pulse:NAME "
                                              "(default alsa:default; a sim camera hears its own)")
        parser.add_argument("--repeats", type=int, default=3, help="marker impulses to average (1–20, default 3)")
        parser.add_argument("--actuators", nargs="+", metavar="NAME",
                            help="step only these actuators (default: every one in the robot's profile)")
        parser.add_argument("--lock-wait", type=float, default=capturing.LOCK_WAIT_S, metavar="S",
                            help="seconds to wait for a robot a capture is using (default %(default)s)")

    def handle(self, *args, **opts):
        from render.hardware.base import HardwareError

        if not 1 <= opts["repeats"] <= 20:
            raise CommandError(f"--repeats must be 1–20, got {opts['repeats']}")
        try:
            capturing.check_devices(opts["robot"], opts["camera"], opts["speaker"])
            record = capturing.robot_calibrate(
                robot_device=opts["robot"], camera_device=opts["camera"], repeats=opts["repeats"],
                actuators=opts["actuators"], speaker_device=opts["speaker"], lock_wait_s=opts["lock_wait"],
                progress=lambda stage: self.stdout.write(f"  {stage}"))
        except (HardwareError, capturing.RobotBusy) as exc:
            raise CommandError(" ".join(str(exc).split())) from None
        c = record.calibration
        impulses = len(c.get("latencies_ms") or []) or opts["repeats"]
        self.stdout.write(f"robot {record.name}: latency {c['latency_ms']:.1f} ms (sd {c['latency_sd_ms']:.1f} ms "
                          f"over {impulses} impulses; {c.get('method', '')})")
        for name, figures in (c.get("actuators") or {}).items():
            if figures.get("latency_ms") is None:
                self.stdout.write(f"  {name:<24} {figures.get('note', 'not measured')}")
                continue
            speed = figures.get("speed_per_s")
            self.stdout.write(f"  {name:<24} latency {figures['latency_ms']:7.1f} ms  rise {figures['rise_ms']:7.1f} ms"
                              + (f"  speed {speed:.2f}/s" if speed is not None else ""))
        self.stdout.write(f"stored on robot record {record.name!r} (admin: Robot records); captures use it from now on")
