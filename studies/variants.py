"""Which video of a cell a study uses: the variant, a short key of the study's render settings (and, for
attention checks, of its rating scale) stored on Stimulus and RenderJob beside utterance × condition ×
embodiment.

Studies that render the same cells alike share their stimuli (same settings, however written → same
variant → the same tokens); studies that render them differently (another size, frame rate, background,
avatar, …) each get their own. A study whose render settings are the defaults has the variant "" — the
variant of every stimulus registered without render settings (placeholder clips, uploads registered by
older code) — so such stimuli stay found by studies that have no `stimuli.render` block.

Every lookup of a study's stimuli goes through here (rendering, capturing, selectors.in_study_variant and
selectors.attention_check_stimuli). No Django: migration 0008 gives existing rows their variant with it too.
"""
from __future__ import annotations

import hashlib
import json

from .spec import RENDER_KEYS

ATTENTION_CHECK_KIND = "attention_check"  # Condition.Kind.ATTENTION_CHECK
DEFAULT_ATTENTION_SCALE = 5
VARIANT_MAX_LENGTH = 40  # the column's length


def cell_variant(spec_or_settings: dict, condition_kind: str = "", *, avatar_sha256: str | None = None) -> str:
    """The variant of a study's cell of `condition_kind`: "" for the default render settings, else "r" and 12
    hex digits of the hash of the settings that differ from the defaults; an attention check on a scale
    other than 5 points adds "a<points>" (its on-screen number is chosen on the study's scale).

    `spec_or_settings` is a study spec (normalised, as parse_spec returns it) or a render job's settings
    (rendering.job_settings: the render keys and `attention_scale`; other keys such as `uploads` are ignored).
    Key order and 25 against 25.0 do not change it. A stored study version's spec (and its render jobs'
    settings) carry the variants frozen when it was loaded (FROZEN_KEY), which are returned as they are: a
    platform whose render defaults change later must not send a running study looking for other videos.
    `avatar_sha256` (the hash of a custom avatar's files, studies/rendering.py's freeze_variants) is hashed with
    the settings, so an avatar edited in place is another variant than its old self."""
    frozen = frozen_variants(spec_or_settings)
    if frozen is not None:
        return frozen[1] if condition_kind == ATTENTION_CHECK_KIND else frozen[0]
    settings = resolved_render_settings(spec_or_settings)
    # Only the settings that differ from the defaults are hashed, so a render key added later (with its
    # default) leaves every study's variant, and so every stored stimulus, where it was.
    differing = {key: value for key, value in settings.items() if value != _DEFAULT_SETTINGS[key]}
    if avatar_sha256 and settings["avatar"]:
        differing["avatar_sha256"] = avatar_sha256
    variant = "r" + _digest(differing)[:12] if differing else ""
    if condition_kind == ATTENTION_CHECK_KIND:
        scale = attention_scale(spec_or_settings)
        if scale != DEFAULT_ATTENTION_SCALE:
            variant += ("-" if variant else "") + f"a{scale}"
    return variant


def study_variants(spec: dict, *, avatar_sha256: str | None = None) -> tuple[str, str]:
    """(variant of the study's cells, variant of its attention-check cells); equal on a 5-point scale."""
    return (cell_variant(spec, avatar_sha256=avatar_sha256),
            cell_variant(spec, ATTENTION_CHECK_KIND, avatar_sha256=avatar_sha256))


FROZEN_KEY = "resolved_variants"  # in a stored spec's `stimuli`, and in its render jobs' settings


def frozen_variants(spec_or_settings: dict) -> tuple[str, str] | None:
    """The (cells, attention checks) variants frozen into a stored spec or a job's settings, else None."""
    stimuli = spec_or_settings.get("stimuli")
    frozen = (stimuli if isinstance(stimuli, dict) else spec_or_settings).get(FROZEN_KEY)
    if isinstance(frozen, (list, tuple)) and len(frozen) == 2 and all(isinstance(v, str) for v in frozen):
        return frozen[0], frozen[1]
    return None


def resolved_render_settings(spec_or_settings: dict) -> dict:
    """The render settings (every key of RENDER_KEYS, defaults filled in) in one normal form: whole numbers as
    int, lists for sequences, mapping keys as text."""
    if isinstance(spec_or_settings.get("stimuli"), dict):
        given = spec_or_settings["stimuli"].get("render") or {}
    else:
        given = spec_or_settings
    return {key: _normal(given.get(key, default)) for key, default in RENDER_KEYS.items()}


def attention_scale(spec_or_settings: dict) -> int:
    """The points of the scale an attention check asks about: a spec's first likert question, or a job's
    `attention_scale`; 5 when there is none."""
    if isinstance(spec_or_settings.get("questions"), dict):
        for question in spec_or_settings["questions"].values():
            if question.get("type") == "likert":
                return int(question["points"])
        return DEFAULT_ATTENTION_SCALE
    return int(spec_or_settings.get("attention_scale") or DEFAULT_ATTENTION_SCALE)


def answer_on_scale(expected_answer, points: int) -> bool:
    """Whether an attention check's expected answer ({"value": n}) is a rating on a 1..points scale."""
    value = expected_answer.get("value") if isinstance(expected_answer, dict) else None
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= points


def _normal(value):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        number = float(value)
        return int(number) if number.is_integer() else number
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _normal(v) for k, v in value.items()}
    return str(value)


def _digest(settings: dict) -> str:
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


_DEFAULT_SETTINGS = {key: _normal(value) for key, value in RENDER_KEYS.items()}
