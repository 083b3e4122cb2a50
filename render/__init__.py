"""render/: the pure rendering library — no Django, no torch. Condition recipes (conditions.py), rigs (rig.py:
the contract; avatar.py, custom_avatar.py, robot.py), the offscreen renderer (offscreen.py), the encoder
(encode.py), on-screen instructions (overlays.py), the ffprobe checks every stimulus passes (checks.py),
one stimulus end to end (stimulus.py), and the placeholder clips of the early demo (placeholder.py)."""
