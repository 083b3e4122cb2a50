"""Physical robots and cameras: drivers behind one interface (`base.Robot`, `base.Camera`), for the hardware
worker that films a robot playing a condition's motion as a stimulus. Pure library: no Django here.

- `maestro.MaestroRobot`: servos on a Pololu Maestro controller, compact serial protocol (pyserial).
- `furhat.FurhatRobot`: a Furhat through its Remote API (gestures built from brow, blink and neck).
- `simulated.SimulatedRobot` / `camera.SimulatedCamera`: the simulated robot of render/robot.py in real
  time, with latency, jitter, speed limits and faults, filmed by a simulated camera.
- `camera.FFmpegCamera`: capture through ffmpeg from a device string (v4l2, avfoundation, dshow).
- `devices.open_robot` / `parse_robot`: a robot from a device string (sim, maestro:PORT?config=FILE, furhat:HOST).
"""
