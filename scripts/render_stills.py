"""Render the avatar and robot stills under docs/images/ (what docs/images/README.md describes), with the
default RenderSettings, so anyone can regenerate them after changing a rig or the renderer:

    PYOPENGL_PLATFORM=osmesa .venv/bin/python scripts/render_stills.py
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from inference.layouts import ARKIT52  # noqa: E402
from inference.robots import robot_profile  # noqa: E402
from render.avatar import Avatar  # noqa: E402
from render.offscreen import RenderSettings, get_renderer  # noqa: E402
from render.robot import EXPRESSIONS, SimRobot  # noqa: E402

AVATAR = {  # still name → (arkit52 weights, head pose rx ry rz tx ty tz)
    "neutral": ({}, None),
    "smile": ({"mouthSmileLeft": 0.9, "mouthSmileRight": 0.9, "cheekSquintLeft": 0.4, "cheekSquintRight": 0.4}, None),
    "jaw_open": ({"jawOpen": 0.6}, None),
    "blink": ({"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0}, None),
    "brows_up": ({"browInnerUp": 1.0, "browOuterUpLeft": 0.8, "browOuterUpRight": 0.8, "eyeWideLeft": 0.3,
                  "eyeWideRight": 0.3}, None),
    "head_turned": ({}, [0, 30, 0, 0, 0, 0]),
}


def main() -> None:
    out = ROOT / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)
    renderer = get_renderer(RenderSettings())
    avatar = Avatar()
    for name, (channels, pose) in AVATAR.items():
        weights = np.zeros(len(ARKIT52), np.float32)
        for channel, value in channels.items():
            weights[ARKIT52.index(channel)] = value
        frame = renderer.render(avatar.pose_parts(weights, None if pose is None else np.asarray(pose, float)),
                                look_at=avatar.look_at())
        Image.fromarray(frame).save(out / f"avatar_{name}.png")
    robot = SimRobot(robot_profile("sim-face").to_dict())
    for name, commands in EXPRESSIONS.items():
        frame = renderer.render(robot.parts_for(robot.positions(commands)), look_at=robot.look_at())
        Image.fromarray(frame).save(out / f"robot_{name}.png")
    print(f"wrote {len(AVATAR) + len(EXPRESSIONS)} stills to {out}")


if __name__ == "__main__":
    main()
