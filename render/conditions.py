"""Conditions' motion recipes that need no model (see DESIGN.md, "Conditions"): pure functions over clips.

Each recipe returns `(clip, recipe)`: the motion to render for one utterance, and a JSON-ready dict that
records every choice made — which recipe (key "recipe"), donor utterance, start frame, extension mode,
seed, shift, and a fingerprint of every input clip — so that `rebuild(recipe, …)` makes the same values bit for bit, and
refuses if an input has changed since.

- `ground_truth(clip)` — the utterance's own recorded motion.
- `random_alignment(...)` — another utterance's recorded motion (same speaker where possible), cut or
  mirror-looped to length, start frame drawn from a seed; GENEA's "mismatched".
- `time_shift(clip, ms)` — own motion delayed (positive) or advanced (negative).
- `still(clip)` — neutral face, still head.
- `catch_trial(clip, ms=500)` — a lip-sync catch trial: own motion shifted by at least 400 ms, with the
  answer a participant paying attention should give.

Two conditions have no recipe here: `model(name)` clips are made by the caller with the trained generator
(inference.generate, through studies/tasks.py), and `uploaded` needs no motion at all (the researcher's
video goes through `render.checks.check_stimulus`, with `render.checks.reencode_upload` as the fix).

`check_against_audio` is the last check before a clip is rendered against its speech: well-formed, the
right layout for the rig, and as long as the audio within one frame.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import numpy as np

from inference import motion
from inference.motion import MotionClip, MotionError

CATCH_TRIAL_MIN_SHIFT_MS = 400.0  # far beyond the ~100–200 ms where people start to notice lip-sync errors
CATCH_TRIAL_EXPECTED_ANSWER = {"mismatch": True}
# Layouts whose all-zero frame is the neutral face (blendshape weights, AU intensities, PCA scores about
# the mean). For other layouts (landmarks, robot motors) zero is no face at all, so `still` holds the
# clip's per-channel median: the pose it spends most time near.
_ZERO_IS_NEUTRAL = ("arkit52", "openface_au", "pca")


# --- recipes -------------------------------------------------------------------------------------------


def ground_truth(clip: MotionClip) -> tuple[MotionClip, dict]:
    """The utterance's own recorded motion, unchanged."""
    recipe = {"recipe": "ground_truth", "source_fingerprint": clip_fingerprint(clip)}
    return clip, recipe


def random_alignment(
    target_name: str,
    target_speaker: str | None,
    n_frames: int,
    donors: Mapping[str, tuple[str | None, MotionClip]],
    *,
    seed: int,
    fps: float | None = None,
) -> tuple[MotionClip, dict]:
    """Another utterance's recorded motion, `n_frames` long: GENEA's mismatched condition.

    `donors` maps utterance names to (speaker, clip); the target itself is never chosen. The donor is drawn
    with `seed` from the utterances of `target_speaker` when there are any, else from all others, in name
    order (so the draw does not depend on the mapping's order). A donor at least `n_frames` long is cut at
    a start frame drawn uniformly from those that fit; a shorter one is extended by playing it backwards
    and forwards (`inference.motion.fit_length`, mode "mirror", no jump at the seams) from a drawn start.
    With `fps`, every donor must have that frame rate (resample them first). Raises MotionError when there
    is no other utterance to take motion from.
    """
    if n_frames <= 0:
        raise MotionError(f"random alignment needs a length of at least one frame, got {n_frames}")
    others = sorted(name for name in donors if name != target_name)
    if not others:
        raise MotionError(
            f"random alignment for {target_name!r} needs another utterance's motion, but the donors hold "
            f"{'only the target itself' if donors else 'no utterances'}; import more utterances of the corpus"
        )
    if fps is not None:
        wrong = [f"{name} ({donors[name][1].fps:g} fps)" for name in others if abs(donors[name][1].fps - fps) > 1e-9]
        if wrong:
            raise MotionError(
                f"random alignment at {fps:g} fps got donors at other rates: {', '.join(wrong)}; "
                "resample them with inference.motion.resample first"
            )
    same_speaker = [name for name in others if target_speaker is not None and donors[name][0] == target_speaker]
    pool = same_speaker or others
    rng = np.random.default_rng(seed)
    donor_name = pool[int(rng.integers(len(pool)))]
    donor_speaker, donor = donors[donor_name]
    if donor.n_frames >= n_frames:
        start, extended = int(rng.integers(donor.n_frames - n_frames + 1)), False
    else:
        start, extended = int(rng.integers(donor.n_frames)), True
    recipe = {
        "recipe": "random_alignment",
        "target": target_name,
        "target_speaker": target_speaker,
        "n_frames": int(n_frames),
        "seed": int(seed),
        "donor": donor_name,
        "donor_speaker": donor_speaker,
        "same_speaker": bool(same_speaker),
        "start_frame": start,
        "mode": "mirror",
        "extended": extended,
        "donor_fingerprint": clip_fingerprint(donor),
    }
    return _mismatched(donor, recipe), recipe


def time_shift(clip: MotionClip, ms: float) -> tuple[MotionClip, dict]:
    """Own motion delayed by `ms` (advanced if negative), same length, edges held (`inference.motion.time_shift`).

    The shift is applied in whole frames: round(ms / 1000 × fps), recorded as `shift_frames`.
    """
    if not math.isfinite(ms):
        raise MotionError(f"a time shift must be a finite number of milliseconds, got {ms!r}")
    recipe = {
        "recipe": "time_shift",
        "shift_ms": float(ms),
        "shift_frames": _shift_frames(clip, ms),
        "source_fingerprint": clip_fingerprint(clip),
    }
    return motion.time_shift(clip, ms), recipe


def still(clip: MotionClip, *, neutral: np.ndarray | None = None) -> tuple[MotionClip, dict]:
    """Neutral face and still head for as long as `clip` (`inference.motion.still_like`).

    The neutral frame is `neutral` when given; else zeros for layouts whose zero is the neutral face
    (arkit52, openface_au, pca) and the clip's per-channel median for the others (landmarks, motors).
    The head pose, if any, is held at zero (looking straight ahead). The neutral frame is recorded.
    """
    if neutral is not None:
        base, kind = np.asarray(neutral, np.float32), "given"
        if base.shape != (clip.values.shape[1],):
            raise MotionError(f"neutral must hold one value per channel ({clip.values.shape[1]}), got shape {base.shape}")
    elif clip.layout in _ZERO_IS_NEUTRAL:
        base, kind = np.zeros(clip.values.shape[1], np.float32), "zeros"
    else:
        base, kind = np.median(clip.values, axis=0).astype(np.float32), "median"
    recipe = {
        "recipe": "still",
        "neutral": kind,
        "neutral_values": [float(v) for v in base],
        "source_fingerprint": clip_fingerprint(clip),
    }
    return motion.still_like(clip, neutral=base), recipe


def catch_trial(clip: MotionClip, ms: float = 500.0) -> tuple[MotionClip, dict]:
    """A lip-sync catch trial: own motion shifted by `ms` (at least 400 ms either way), answer known.

    Such a shift is plainly out of sync to anyone watching, so the recipe carries the answer expected of
    an attentive participant (`expected_answer`: {"mismatch": True}). The clip must be longer than the
    shift, or no frame would show the shifted motion.
    """
    if not math.isfinite(ms) or abs(ms) < CATCH_TRIAL_MIN_SHIFT_MS:
        raise MotionError(
            f"a lip-sync catch trial must shift the motion by at least {CATCH_TRIAL_MIN_SHIFT_MS:g} ms, got {ms!r} ms; "
            "smaller shifts are not reliably noticed, so a participant who misses them is not inattentive "
            "(use time_shift for a graded condition)"
        )
    frames = _shift_frames(clip, ms)
    if abs(frames) / clip.fps * 1000 < CATCH_TRIAL_MIN_SHIFT_MS - 1e-6:
        frames += int(math.copysign(1, frames))  # rounding to whole frames must not bring it under the minimum
    if abs(frames) >= clip.n_frames:
        raise MotionError(
            f"the clip lasts {clip.duration_s:.3f} s, too short for a {ms:g} ms shift: no frame would show the "
            "shifted motion; use a longer utterance"
        )
    shift_ms = frames / clip.fps * 1000.0
    recipe = {
        "recipe": "catch_trial",
        "shift_ms": float(shift_ms),
        "requested_ms": float(ms),
        "shift_frames": frames,
        "expected_answer": dict(CATCH_TRIAL_EXPECTED_ANSWER),
        "source_fingerprint": clip_fingerprint(clip),
    }
    return motion.time_shift(clip, shift_ms), recipe


# --- rebuilding --------------------------------------------------------------------------------------------


def rebuild(
    recipe: Mapping,
    *,
    clip: MotionClip | None = None,
    donors: Mapping[str, tuple[str | None, MotionClip]] | None = None,
) -> MotionClip:
    """The clip a recipe describes, from the recorded choices (no new random draws), bit for bit.

    `clip` is the utterance's own motion (every condition but random_alignment); `donors` holds the donor
    named in a random_alignment recipe. An input whose fingerprint differs from the one recorded is
    refused: the stimulus would no longer be the one that was rated.
    """
    kind = recipe.get("recipe")
    if kind == "random_alignment":
        name = recipe["donor"]
        if not donors or name not in donors:
            raise MotionError(f"the recipe takes motion from {name!r}; pass it in donors")
        donor = donors[name][1]
        _same_input(donor, recipe["donor_fingerprint"], f"donor {name!r}")
        return _mismatched(donor, dict(recipe))
    if clip is None:
        raise MotionError(f"rebuilding a {kind!r} recipe needs the utterance's own clip")
    if kind not in ("ground_truth", "time_shift", "still", "catch_trial"):
        raise MotionError(f"unknown recipe {kind!r}; known: ground_truth, random_alignment, "
                          "time_shift, still, catch_trial")
    _same_input(clip, recipe["source_fingerprint"], "the utterance's clip")
    if kind == "ground_truth":
        return clip
    if kind == "still":
        return motion.still_like(clip, neutral=np.asarray(recipe["neutral_values"], np.float32))
    return motion.time_shift(clip, recipe["shift_ms"])


def clip_fingerprint(clip: MotionClip) -> str:
    """SHA-256 over what decides a clip's motion: frame rate, layout, channels, values and head pose."""
    digest = hashlib.sha256()
    digest.update(repr((float(clip.fps), clip.layout, tuple(clip.channels))).encode())
    digest.update(np.ascontiguousarray(clip.values, dtype="<f4").tobytes())
    if clip.head_pose is not None:
        digest.update(b"head")
        digest.update(np.ascontiguousarray(clip.head_pose, dtype="<f4").tobytes())
    return digest.hexdigest()


def _mismatched(donor: MotionClip, recipe: Mapping) -> MotionClip:
    fitted = motion.fit_length(donor, recipe["n_frames"], start=recipe["start_frame"], mode=recipe["mode"])
    return fitted.with_values(fitted.values, condition="random_alignment", motion_from=recipe["donor"])


def _same_input(clip: MotionClip, fingerprint: str, what: str) -> None:
    if clip_fingerprint(clip) != fingerprint:
        raise MotionError(f"{what} is not the one the recipe was made from (its fingerprint differs); "
                          "the stimulus cannot be rebuilt from changed motion")


def _shift_frames(clip: MotionClip, ms: float) -> int:
    return int(round(ms / 1000.0 * clip.fps))  # as inference.motion.time_shift rounds


# --- the check before rendering ------------------------------------------------------------------------


def check_against_audio(clip: MotionClip, audio_duration_s: float, *, layout: str | None = None) -> MotionClip:
    """The clip ready to render against speech lasting `audio_duration_s`; raises MotionError otherwise.

    Checks that the clip is well formed (finite values — arrays changed after the clip was made are
    checked again — and a known layout), converts it to `layout` when given (the rig's layout; the
    retargeting error names the known mappings), and that it lasts as long as the audio within one frame.
    A clip shorter or longer than that is refused, saying by how much and how to fix it.
    """
    clip.validate()
    if layout is not None and clip.layout != layout:
        clip = motion.retarget(clip, layout)
    if not (math.isfinite(audio_duration_s) and audio_duration_s > 0):
        raise MotionError(f"the audio duration must be a positive number of seconds, got {audio_duration_s!r}")
    frame_s = 1.0 / clip.fps
    gap_s = audio_duration_s - clip.duration_s
    if abs(gap_s) <= frame_s + 1e-6:
        return clip
    needed = max(1, int(round(audio_duration_s * clip.fps)))
    relation = "shorter" if gap_s > 0 else "longer"
    raise MotionError(
        f"the motion is {abs(gap_s):.3f} s ({abs(gap_s) * clip.fps:.1f} frames) {relation} than the audio: "
        f"{clip.duration_s:.3f} s ({clip.n_frames} frames at {clip.fps:g} fps) against {audio_duration_s:.3f} s, "
        f"more than the one frame allowed; {'cut' if gap_s < 0 else 'loop'} it to {needed} frames with "
        "inference.motion.fit_length, or build it with a condition recipe (render.conditions) that fits it to "
        "the utterance's length"
    )
