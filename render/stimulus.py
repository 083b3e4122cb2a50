"""One stimulus from end to end: a motion clip played on a rig, rendered offscreen, optionally with an
on-screen instruction (attention checks), streamed into the encoder with the speech, checked, and written
atomically. The one function the render task calls (studies/rendering.py)."""
from __future__ import annotations

import os
from pathlib import Path

from inference.motion import MotionClip

from .checks import StimulusFacts
from .encode import encode_stimulus
from .offscreen import RenderSettings, render_clip
from .rig import Rig


def make_stimulus(rig: Rig, clip: MotionClip, audio: str | os.PathLike, out_path: str | os.PathLike, *,
                  settings: RenderSettings | dict | None = None, audio_offset_s: float = 0.0,
                  overlay_text: str | None = None) -> StimulusFacts:
    """Render `clip` on `rig` with the speech in `audio` (cut from `audio_offset_s`, as long as the clip)
    into a checked stimulus MP4 at `out_path`; returns its facts. Nothing appears at `out_path` unless the
    whole file was made and passed the checks."""
    if isinstance(settings, dict):
        settings = RenderSettings.from_dict({k: v for k, v in settings.items() if k != "fps"})
    settings = settings or RenderSettings()
    frames = render_clip(rig, clip, settings)
    if overlay_text:
        from .overlays import overlay_instruction

        frames = overlay_instruction(frames, clip.fps, overlay_text, n_frames=clip.n_frames)
    return encode_stimulus(frames, audio, Path(out_path), fps=clip.fps, width=settings.width,
                           height=settings.height, audio_offset_s=audio_offset_s)
