"""Corpus import: turn a folder or a .zip of recorded utterances into a clean corpus folder.

An utterance is an audio file (WAV, FLAC, MP3, M4A) and a motion file with the same stem, anywhere in the
source. Motion comes in one of these formats (the layout each becomes is in brackets):

- OpenFace 2 CSV (`openface_au`): the AUxx_r intensities in OPENFACE_AUS order; head pose rx, ry, rz from
  pose_Rx, pose_Ry, pose_Rz (radians → degrees) and tx, ty, tz from pose_Tx..pose_Tz (mm). Headers may
  have OpenFace's leading space after each comma. Every other OpenFace output column (gaze, landmarks,
  PDM parameters, AUxx_c, ...) is accepted and not kept; a column OpenFace never writes is an error.
  A landmark-only export (no AUxx_r, but X_0..Z_67 from -3Dfp) becomes `landmarks:ibug68` in mm instead.
- Live Link Face CSV (`arkit52`): the 52 capitalised ARKit names mapped to ARKIT52 order. Head pose
  rx = HeadPitch, ry = HeadYaw, rz = HeadRoll, each × 180 to degrees, translation 0. The ×180 is how
  Unreal's ARKit face support makes these curves: it maps the tracked rotator's −180..180° to −1..1
  (AppleARKitFaceSupport, "Map the -180..180 range to -1..1"); signs are kept as recorded. The frame
  rate comes from the `Timecode` column (HH:MM:SS:FF.fff, the fraction a sub-frame).
- Landmark CSV (`landmarks:ibug68` for 68 points, `landmarks:mediapipe468` for 468): columns x0..xN,
  y0..yN and optionally z0..zN (or x_0, ...; blocked or interleaved, matched by name), plus optional
  `frame` and `timestamp`/`time`. A missing z is 0. Or NPY arrays [T, N, 2|3]. Each file's unit (mm, m,
  px, normalised) is declared (`landmark_units` option or metadata.csv column) or told from the values
  (`resolve_landmark_units`); metres become mm, and one corpus holds landmarks in one unit only.
- The platform's own clip `.npz` (MotionClip.save).

Frame rates: a file with timestamps (OpenFace `timestamp`, Live Link `Timecode`, a landmark `timestamp`)
has a measured rate — the timestamps must be regular (a step more than a quarter frame off the median
step is an error naming the line) and the rate is frames per second over the whole file, snapped to a
standard rate within 0.5 %. A file without timestamps (NPY, landmark CSV without a time column) takes
the `fps` column of metadata.csv, else the `fps` option. All utterances must share one rate; with the
`fps` option every clip is resampled to it instead (linear, length matched to the audio).

Tracking confidence (OpenFace): a frame with `confidence` below the threshold or `success` 0 is bad.
`low_confidence="interpolate"` replaces the bad frames by linear interpolation between the nearest good
frames (edges hold the nearest good frame) and reports the count; `"reject"` rejects the utterance; with
more than `max_bad_fraction` of frames bad the utterance is rejected under either policy.

Optional `metadata.csv` (one per source): a column `utterance` (or `name`, or `file`), and `speaker`,
`emotion`, `transcript`, `fps`, `landmark_units`; other columns are kept as the utterance's metadata.

Every problem names the file and, for CSV, the line as a person counts it (the header is line 1).
By default nothing is written when any utterance has an error, and all errors are listed at once;
`allow_partial=True` skips bad utterances and reports them. The corpus is built in a hidden staging
folder beside the destination and renamed into place only once everything passed, so the destination
is either absent or complete. Layout of the result:

    <destination>/<name>.wav            16 kHz mono 16-bit PCM
    <destination>/original/<name>.<ext> the audio as it came, byte for byte
    <destination>/motion/<name>.npz     the motion clip

`assign_split` makes the train/val/test split (by speaker or by utterance), deterministic for a seed.
"""
from __future__ import annotations

import csv
import io
import math
import os
import random
import re
import secrets
import shutil
import stat
import tempfile
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np

from . import audio
from .layouts import ARKIT52, OPENFACE_AUS
from .motion import MotionClip, MotionError, frames_for_duration, resample

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a")
MOTION_SUFFIXES = (".csv", ".npy", ".npz")
METADATA_FILE = "metadata.csv"
LOW_CONFIDENCE_POLICIES = ("interpolate", "reject")
SPLITS = ("train", "val", "test")
MAX_NAME_LENGTH = 120  # Utterance.name in the database

# Frame rates trackers and cameras record at; a measured rate within RATE_TOLERANCE of one is that rate.
STANDARD_RATES = (23.976, 24.0, 25.0, 29.97, 30.0, 48.0, 50.0, 59.94, 60.0, 90.0, 100.0, 119.88, 120.0)
RATE_TOLERANCE = 0.005
# Timecode frame-count bases (the FF field counts 0..base-1 within a second).
TIMECODE_BASES = (24, 25, 30, 48, 50, 60, 100, 120)
LANDMARK_LAYOUTS = {68: "landmarks:ibug68", 468: "landmarks:mediapipe468"}
# The units landmark files come in: millimetres and metres (metric: 3-D face models, depth cameras), pixels
# and normalised image coordinates (pixels divided by the image's width and height, as MediaPipe writes).
LANDMARK_UNITS = ("mm", "m", "px", "normalised")
# A face's size in a frame: the RMS distance of its points from their centre in x and y (a human face, and
# the platform's iBUG-68 face, measures about 53 mm so). A file's size (median over frames) must lie in its
# unit's range; the ranges are wide (a third to three times a face) and the metric ones do not overlap.
FACE_SIZE_RANGES = {"mm": (15.0, 150.0), "m": (0.015, 0.15), "px": (2.0, math.inf), "normalised": (0.0, 0.5)}
MAX_SIZE_CHANGE = 10.0  # within one file: frames whose faces differ more in size are in different units

Progress = Callable[[int, int], None]


# --- results -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or worth knowing) about the source. `file` is relative to the source root
    ("" for the import as a whole); `line` is the CSV line as a person counts it (header = 1)."""

    file: str
    message: str
    line: int | None = None
    severity: str = "error"  # error | warning
    utterance: str | None = None  # the utterance it belongs to; None: the whole import

    def __str__(self) -> str:
        where = self.file or "corpus"
        if self.line is not None:
            where += f", line {self.line}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class ImportedUtterance:
    """One imported utterance. Paths are relative to the corpus folder."""

    name: str
    speaker: str
    emotion: str
    transcript: str
    duration_s: float
    fps: float
    layout: str
    n_frames: int
    audio_path: str
    original_path: str
    clip_path: str
    interpolated_frames: int = 0
    metadata: dict = field(default_factory=dict)


@dataclass
class ImportResult:
    """What an import found, wrote and refused. `root` is the corpus folder, or None when nothing was
    written (`ok` is False)."""

    source: str
    root: Path | None
    utterances: list[ImportedUtterance]
    problems: list[Problem]
    found: int = 0
    fps: float | None = None
    options: dict = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def skipped(self) -> list[str]:
        """Utterances that were found but not imported (each has at least one error)."""
        imported = {u.name for u in self.utterances}
        return sorted({p.utterance for p in self.errors if p.utterance and p.utterance not in imported})

    @property
    def ok(self) -> bool:
        return self.root is not None and bool(self.utterances)

    @property
    def layouts(self) -> dict[str, int]:
        return dict(Counter(u.layout for u in self.utterances))

    def failure_reason(self) -> str:
        """One line saying why nothing was imported ("" when the import succeeded)."""
        if self.ok:
            return ""
        n = len(self.errors)
        if n == 1:
            return f"{self.errors[0]}; nothing was imported"
        if n:
            return f"{n} errors in {self.source} (see the report); nothing was imported"
        return f"no utterances to import in {self.source}; nothing was imported"

    def report(self) -> str:
        """The import as a person reads it: what was found and imported, then every error and warning."""
        lines = [f"Import of {self.source}"]
        if self.ok:
            layouts = ", ".join(f"{name} ({n})" if len(self.layouts) > 1 else name for name, n in self.layouts.items())
            lines.append(f"  found {self.found} utterance(s); imported {len(self.utterances)} at {self.fps:g} fps, "
                         f"layout {layouts}" + (f"; skipped {len(self.skipped)}: {', '.join(self.skipped)}"
                                                if self.skipped else ""))
            interpolated = sum(u.interpolated_frames for u in self.utterances)
            if interpolated:
                lines.append(f"  interpolated {interpolated} low-confidence frame(s) in "
                             f"{sum(1 for u in self.utterances if u.interpolated_frames)} utterance(s)")
        else:
            lines.append(f"  found {self.found} utterance(s); {self.failure_reason()}")
        for severity, problems in (("errors", self.errors), ("warnings", self.warnings)):
            if problems:
                lines.append(f"{severity} ({len(problems)}):")
                lines.extend(f"  {p}" for p in problems)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-safe summary to keep with the corpus (the stored import report)."""
        return {
            "source": self.source,
            "found": self.found,
            "imported": len(self.utterances),
            "skipped": self.skipped,
            "fps": self.fps,
            "layouts": self.layouts,
            "interpolated_frames": {u.name: u.interpolated_frames for u in self.utterances if u.interpolated_frames},
            "options": self.options,
            "problems": [asdict(p) for p in self.problems],
            "report": self.report(),
        }


@dataclass(frozen=True)
class ArchiveLimits:
    """What a .zip may hold before it is refused unopened (zip bombs, archives that fill the disk)."""

    max_files: int = 20_000
    max_total_bytes: int = 2 * 1024 ** 3
    max_ratio: float = 1000.0          # uncompressed / compressed, per entry
    ratio_min_bytes: int = 1024 ** 2  # entries smaller than this are never ratio bombs


class InvalidInput(ValueError):
    """One input file cannot be used; `problem` says which file, which line and why."""

    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


# --- the import ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    fps: float | None
    confidence_threshold: float
    low_confidence: str
    max_bad_fraction: float
    allow_partial: bool
    landmark_units: str | None = None  # declared for every landmark file (a metadata.csv row may override)


@dataclass
class _Candidate:
    name: str
    audio: Path | None = None
    motion: Path | None = None
    audio_rel: str = ""
    motion_rel: str = ""
    meta: dict = field(default_factory=dict)  # metadata.csv row (lower-cased keys, stripped values)
    blocked: bool = False  # an error was found before its files were read


@dataclass
class ParsedMotion:
    """A motion file as read, before it becomes a clip: layout, values, optional head pose, the rate
    measured from its timestamps (None when it has none) and warnings (e.g. interpolated frames)."""

    layout: str
    values: np.ndarray
    head_pose: np.ndarray | None = None
    fps: float | None = None  # measured from the file; None: the file has no timing
    source_format: str = ""
    interpolated: int = 0
    channels: tuple[str, ...] = ()
    metadata: dict = field(default_factory=dict)
    basis: object = None
    warnings: list[Problem] = field(default_factory=list)
    no_rate_because: str = "the file has no timestamps"


@dataclass
class _Staged:
    utterance: ImportedUtterance
    source_fps: float
    audio_duration_s: float


def import_corpus(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    fps: float | None = None,
    confidence_threshold: float = 0.8,
    low_confidence: str = "interpolate",
    max_bad_fraction: float = 0.2,
    allow_partial: bool = False,
    landmark_units: str | None = None,
    limits: ArchiveLimits = ArchiveLimits(),
    workers: int | None = None,
    progress: Progress | None = None,
) -> ImportResult:
    """Check every utterance in `source` (a folder or a .zip) and write the corpus folder `destination`.

    `destination` must not exist; it is created only if the import succeeds (`result.ok`), complete,
    by renaming a staging folder beside it. `fps` is the corpus frame rate: clips recorded at another
    rate are resampled to it, and files without timing are taken to be at it. `progress(done, total)`
    is called as utterances are checked. `landmark_units` (one of LANDMARK_UNITS) declares the unit of every
    landmark file, which is otherwise told from its values (a metadata.csv `landmark_units` column declares
    it per utterance). Problems in the data are reported in the result, never raised; a bad option raises
    ValueError.
    """
    options = _Options(fps=_check_options(fps, confidence_threshold, low_confidence, max_bad_fraction),
                       confidence_threshold=float(confidence_threshold), low_confidence=low_confidence,
                       max_bad_fraction=float(max_bad_fraction), allow_partial=bool(allow_partial),
                       landmark_units=_check_landmark_units(landmark_units))
    source, destination = Path(source), Path(destination)
    result = ImportResult(source=str(source), root=None, utterances=[], problems=[],
                          options={"fps": options.fps, "confidence_threshold": options.confidence_threshold,
                                   "low_confidence": options.low_confidence,
                                   "max_bad_fraction": options.max_bad_fraction,
                                   "allow_partial": options.allow_partial,
                                   "landmark_units": options.landmark_units})
    if destination.exists():
        result.problems.append(Problem("", f"the destination {destination} already exists; choose another "
                                           f"name or remove it first"))
        return result
    if not source.exists():
        result.problems.append(Problem("", f"{source} does not exist; give a folder or a .zip of utterances"))
        return result
    destination.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    staging = destination.with_name(f".{destination.name}.staging-{token}")
    try:
        if source.is_dir():
            _import_folder(source, staging, options, result, workers, progress)
        elif source.suffix.lower() == ".zip":
            with tempfile.TemporaryDirectory(dir=destination.parent, prefix=f".{destination.name}.unzip-") as tmp:
                problems = extract_zip(source, Path(tmp), limits=limits)
                result.problems.extend(problems)
                if not any(p.severity == "error" for p in problems):
                    _import_folder(Path(tmp), staging, options, result, workers, progress)
        else:
            result.problems.append(Problem(source.name, "only folders and .zip archives can be imported; unpack it "
                                                        "or make a .zip of the folder"))
        if _fatal(result, options) or not result.utterances:
            result.utterances = []
            shutil.rmtree(staging, ignore_errors=True)
            return result
        os.replace(staging, destination)
        result.root = destination
        return result
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _check_options(fps, confidence_threshold, low_confidence, max_bad_fraction) -> float | None:
    if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number of frames per second, got {fps!r}")
    if low_confidence not in LOW_CONFIDENCE_POLICIES:
        raise ValueError(f"low_confidence must be one of {', '.join(LOW_CONFIDENCE_POLICIES)}, got {low_confidence!r}")
    if not 0 <= confidence_threshold <= 1:
        raise ValueError(f"the confidence threshold must be between 0 and 1, got {confidence_threshold!r}")
    if not 0 <= max_bad_fraction <= 1:
        raise ValueError(f"the largest share of bad frames must be between 0 and 1, got {max_bad_fraction!r}")
    return None if fps is None else float(fps)


def _check_landmark_units(unit: str | None) -> str | None:
    if unit is not None and unit not in LANDMARK_UNITS:
        raise ValueError(f"landmark_units must be one of {', '.join(LANDMARK_UNITS)}, got {unit!r}")
    return unit


def _fatal(result: ImportResult, options: _Options) -> bool:
    """Whether the errors forbid writing: any error, or under allow_partial one that is not an utterance's."""
    if options.allow_partial:
        return any(p.utterance is None for p in result.errors)
    return bool(result.errors)


def _import_folder(root: Path, staging: Path, options: _Options, result: ImportResult,
                   workers: int | None, progress: Progress | None) -> None:
    candidates, problems = _discover(root)
    result.problems.extend(problems)
    result.found = len(candidates)
    if not candidates:
        if not problems:
            result.problems.append(Problem("", "found no audio or motion files; each utterance needs an audio file "
                                               f"({', '.join(AUDIO_SUFFIXES)}) and a motion file "
                                               f"({', '.join(MOTION_SUFFIXES)}) with the same name"))
        return
    (staging / "original").mkdir(parents=True)
    (staging / "motion").mkdir()
    todo = [c for c in candidates if not c.blocked]
    staged: dict[str, _Staged] = {}
    per_utterance: dict[str, list[Problem]] = {}
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [(c, pool.submit(_stage_utterance, c, staging, options)) for c in todo]
        for done, (candidate, future) in enumerate(futures, start=1):
            item, item_problems = future.result()
            per_utterance[candidate.name] = item_problems
            if item is not None:
                staged[candidate.name] = item
            if progress:
                progress(done, len(todo))
    for candidate in todo:
        result.problems.extend(per_utterance[candidate.name])
    if not staged:
        return
    result.fps = _settle_frame_rate(staged, staging, options, result)
    result.utterances = [staged[name].utterance for name in sorted(staged)]
    _check_one_landmark_unit(result)
    if len(result.layouts) > 1:
        result.problems.append(Problem("", "the corpus mixes motion layouts (" + ", ".join(
            f"{name}: {n}" for name, n in result.layouts.items()) + "); models train on one layout, so retarget "
            "or import them as separate corpora", severity="warning"))


def _check_one_landmark_unit(result: ImportResult) -> None:
    """Landmarks in different units (after metres became mm) cannot share a corpus: models, PCA and the
    landmark errors of `evaluate_models` would mix pixels with millimetres."""
    groups: dict[str, list[str]] = defaultdict(list)
    for u in result.utterances:
        if "landmark_units" in u.metadata:
            groups[u.metadata["landmark_units"]].append(u.metadata["source_motion"])
    if len(groups) > 1:
        listing = "; ".join(f"{unit}: {len(files)} ({_names(files)})" for unit, files in sorted(groups.items()))
        result.problems.append(Problem("", f"the landmark files are in different units ({listing}); a corpus "
                                           f"holds one unit: convert them to one, or import them as separate "
                                           f"corpora"))


def _settle_frame_rate(staged: dict[str, _Staged], staging: Path, options: _Options,
                       result: ImportResult) -> float | None:
    """Bring every clip to one frame rate: the `fps` option (resampling) or the rate they all share."""
    groups: dict[float, list[str]] = defaultdict(list)
    for name in sorted(staged):
        groups[_group_rate(staged[name].source_fps, groups)].append(name)
    target = options.fps
    if target is None:
        if len(groups) > 1:
            listing = "; ".join(f"{rate:g} fps: {len(names)} ({_names(names)})"
                                for rate, names in sorted(groups.items()))
            result.problems.append(Problem("", f"utterances have different frame rates ({listing}); give a corpus "
                                               f"frame rate (--fps) to resample them all to it"))
            return None
        target = next(iter(groups))
    resampled = []
    for name, item in staged.items():
        if _same_rate(item.source_fps, target):
            if item.source_fps != target:  # e.g. measured 29.97 under --fps 30: relabel, same frames
                _rewrite_clip(staging / item.utterance.clip_path, lambda c: replace(c, fps=target))
            staged[name].utterance = replace(item.utterance, fps=target)
            continue
        n_frames = frames_for_duration(item.audio_duration_s, target)  # the audio's length at the new rate

        def to_target(clip: MotionClip, n_frames=n_frames) -> MotionClip:
            moved = resample(clip, target, n_frames=n_frames)
            return replace(moved, metadata={**moved.metadata, "source_fps": clip.fps})

        clip = _rewrite_clip(staging / item.utterance.clip_path, to_target)
        staged[name].utterance = replace(item.utterance, fps=target, n_frames=clip.n_frames,
                                         metadata={**item.utterance.metadata, "source_fps": item.source_fps})
        resampled.append(name)
    if resampled:
        rates = sorted({staged[n].source_fps for n in resampled})
        result.problems.append(Problem("", f"resampled {len(resampled)} utterance(s) from "
                                           f"{', '.join(f'{r:g}' for r in rates)} fps to {target:g} fps",
                                       severity="warning"))
    return target


def _rewrite_clip(path: Path, change) -> MotionClip:
    clip = change(MotionClip.load(path))
    clip.save(path)
    return clip


def _group_rate(rate: float, groups: dict[float, list[str]]) -> float:
    for known in groups:
        if _same_rate(rate, known):
            return known
    return rate


def _same_rate(a: float, b: float) -> bool:
    return abs(a - b) <= RATE_TOLERANCE * max(a, b)


def _names(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … {len(names) - limit} more" if len(names) > limit else "")


# --- finding the utterances ----------------------------------------------------------------------------


def _discover(root: Path) -> tuple[list[_Candidate], list[Problem]]:
    """Group the files under `root` by stem into candidates and read metadata.csv."""
    problems: list[Problem] = []
    audio_files: dict[str, list[Path]] = defaultdict(list)
    motion_files: dict[str, list[Path]] = defaultdict(list)
    metadata_files: list[Path] = []
    ignored: list[str] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") or part == "__MACOSX" for part in rel.parts) or not path.is_file():
            continue
        suffix = path.suffix.lower()
        if path.name.lower() == METADATA_FILE:
            metadata_files.append(path)
        elif suffix in AUDIO_SUFFIXES:
            audio_files[path.stem].append(path)
        elif suffix in MOTION_SUFFIXES:
            motion_files[path.stem].append(path)
        else:
            ignored.append(rel.as_posix())
    if ignored:
        problems.append(Problem("", f"ignored {len(ignored)} file(s) that are neither audio, motion nor "
                                    f"{METADATA_FILE}: {_names(ignored, 5)}", severity="warning"))

    def rel(p: Path) -> str:
        return p.relative_to(root).as_posix()

    candidates = []
    for name in sorted(set(audio_files) | set(motion_files)):
        cand = _Candidate(name)
        for kind, files in (("audio", audio_files.get(name, [])), ("motion", motion_files.get(name, []))):
            if len(files) > 1:
                problems.append(Problem(rel(files[0]), f"utterance {name!r} has {len(files)} {kind} files "
                                                       f"({', '.join(rel(f) for f in files)}); keep one",
                                        utterance=name))
            elif files:
                setattr(cand, kind, files[0])
                setattr(cand, f"{kind}_rel", rel(files[0]))
        if len(name) > MAX_NAME_LENGTH:
            problems.append(Problem(cand.audio_rel or cand.motion_rel, f"the name {name!r} is longer than "
                                    f"{MAX_NAME_LENGTH} characters; rename the files", utterance=name))
        elif cand.audio and not cand.motion and name not in motion_files:
            problems.append(Problem(cand.audio_rel, f"utterance {name!r} has audio but no motion file "
                                                    f"({name}.csv, .npy or .npz beside it)", utterance=name))
        elif cand.motion and not cand.audio and name not in audio_files:
            problems.append(Problem(cand.motion_rel, f"utterance {name!r} has motion but no audio file "
                                                     f"({name}.wav, .flac, .mp3 or .m4a)", utterance=name))
        candidates.append(cand)
    if len(metadata_files) > 1:
        problems.append(Problem("", f"found {len(metadata_files)} {METADATA_FILE} files "
                                    f"({', '.join(rel(p) for p in metadata_files)}); keep one for the corpus"))
    elif metadata_files:
        problems.extend(_attach_metadata(metadata_files[0], rel(metadata_files[0]), candidates))
    # Errors found already (missing partner, duplicates, bad metadata) keep the utterance from being read.
    blocked = {p.utterance for p in problems if p.utterance and p.severity == "error"}
    for cand in candidates:
        cand.blocked = cand.name in blocked or not (cand.audio and cand.motion)
    return candidates, problems


def _attach_metadata(path: Path, rel: str, candidates: list[_Candidate]) -> list[Problem]:
    problems: list[Problem] = []
    try:
        header, rows = _read_csv(path, rel)
    except InvalidInput as exc:
        return [exc.problem]
    keys = [h.lower() for h in header]
    name_key = next((k for k in ("utterance", "name", "file") if k in keys), None)
    if name_key is None:
        return [Problem(rel, "has no `utterance` (or `name`) column naming each utterance", line=1)]
    by_name = {c.name: c for c in candidates}
    seen: dict[str, int] = {}
    for line, row in rows:
        values = {k: v.strip() for k, v in zip(keys, row)}
        name = values[name_key]
        if name_key == "file":
            name = PurePosixPath(name).stem
        if not name:
            problems.append(Problem(rel, f"the `{name_key}` column is empty", line=line))
            continue
        if name in seen:
            problems.append(Problem(rel, f"utterance {name!r} is described twice (first on line {seen[name]})",
                                    line=line))
            continue
        seen[name] = line
        if name not in by_name:
            problems.append(Problem(rel, f"no audio or motion file for utterance {name!r}; fix the name or add "
                                         f"its files", line=line))
            continue
        if values.get("fps"):
            try:
                rate = float(values["fps"])
                if not (math.isfinite(rate) and rate > 0):
                    raise ValueError
            except ValueError:
                problems.append(Problem(rel, f"fps {values['fps']!r} is not a positive number", line=line,
                                        utterance=name))
                continue
        if values.get("landmark_units") and values["landmark_units"] not in LANDMARK_UNITS:
            problems.append(Problem(rel, f"landmark_units {values['landmark_units']!r} is not one of "
                                         f"{', '.join(LANDMARK_UNITS)}", line=line, utterance=name))
            continue
        by_name[name].meta = {k: v for k, v in values.items() if k != name_key}
    missing = [c.name for c in candidates if c.name not in seen]
    if missing:
        problems.append(Problem(rel, f"{len(missing)} utterance(s) have no row and get no speaker or transcript: "
                                     f"{_names(missing, 5)}", severity="warning"))
    return problems


# --- one utterance -------------------------------------------------------------------------------------


def _stage_utterance(cand: _Candidate, staging: Path, options: _Options) -> tuple[_Staged | None, list[Problem]]:
    """Check one utterance and write its files into `staging`; on any error write nothing."""
    wav = staging / f"{cand.name}.wav"
    clip_path = staging / "motion" / f"{cand.name}.npz"
    original = staging / "original" / f"{cand.name}{cand.audio.suffix}"
    problems: list[Problem] = []
    try:
        # Audio and motion are both checked before giving up, so one pass lists both files' errors.
        duration = motion = None
        try:
            duration = _stage_audio(cand, wav)
        except InvalidInput as exc:
            problems.append(replace(exc.problem, utterance=cand.name))
        try:
            motion = _read_motion(cand.motion, cand.motion_rel, options,
                                  landmark_units=cand.meta.get("landmark_units") or options.landmark_units)
            problems.extend(replace(p, utterance=cand.name) for p in motion.warnings)
        except InvalidInput as exc:
            problems.append(replace(exc.problem, utterance=cand.name))
        if duration is None or motion is None:
            wav.unlink(missing_ok=True)
            return None, problems
        rate = motion.fps or _float(cand.meta.get("fps")) or options.fps
        if rate is None:
            raise InvalidInput(Problem(cand.motion_rel, f"{motion.no_rate_because}, so its frame rate is unknown; give "
                                                        f"--fps or an `fps` column in metadata.csv"))
        clip = _make_clip(motion, rate, cand)
        try:
            clip.validate(audio_duration_s=duration)
        except MotionError as exc:
            raise InvalidInput(Problem(cand.motion_rel, f"length differs from {cand.audio_rel}: {exc}")) from None
        clip.save(clip_path)
        _copy_atomic(cand.audio, original)
        utterance = ImportedUtterance(
            name=cand.name, speaker=cand.meta.get("speaker", ""), emotion=cand.meta.get("emotion", ""),
            transcript=cand.meta.get("transcript", ""), duration_s=round(duration, 6), fps=rate,
            layout=clip.layout, n_frames=clip.n_frames, audio_path=wav.name,
            original_path=f"original/{original.name}", clip_path=f"motion/{clip_path.name}",
            interpolated_frames=motion.interpolated,
            metadata={**{k: v for k, v in cand.meta.items()
                         if k not in ("speaker", "emotion", "transcript", "fps", "landmark_units")},
                      "source_audio": cand.audio_rel, "source_motion": cand.motion_rel,
                      "source_format": motion.source_format, "audio_sha256": audio.content_sha256(cand.audio),
                      **({"landmark_units": motion.metadata["landmark_units"]}
                         if "landmark_units" in motion.metadata else {})},
        )
        return _Staged(utterance, rate, duration), problems
    except InvalidInput as exc:
        for path in (wav, clip_path, original):
            path.unlink(missing_ok=True)
        return None, [*problems, replace(exc.problem, utterance=cand.name)]
    except BaseException:
        for path in (wav, clip_path, original):
            path.unlink(missing_ok=True)
        raise


def _stage_audio(cand: _Candidate, wav: Path) -> float:
    """Write the canonical WAV and return the audio's duration; unreadable or silent audio is invalid."""
    try:
        audio.transcode_to_wav(cand.audio, wav)
        samples = audio.decode(wav)
        audio.check_not_silent(samples, cand.audio_rel)
    except (audio.AudioError, FileNotFoundError) as exc:
        message = str(exc).replace(str(cand.audio.resolve()), cand.audio_rel).replace(str(cand.audio), cand.audio_rel)
        raise InvalidInput(Problem(cand.audio_rel, message)) from None
    return len(samples) / audio.SAMPLE_RATE


def _make_clip(motion: ParsedMotion, rate: float, cand: _Candidate) -> MotionClip:
    metadata = {"source": "recorded", **motion.metadata, "source_format": motion.source_format,
                "source_file": cand.motion_rel, "utterance": cand.name}
    if motion.interpolated:
        metadata["interpolated_frames"] = motion.interpolated
    try:
        return MotionClip(fps=rate, layout=motion.layout, values=motion.values, channels=motion.channels,
                          head_pose=motion.head_pose, metadata=metadata, basis=motion.basis)
    except MotionError as exc:
        raise InvalidInput(Problem(cand.motion_rel, str(exc))) from None


def _copy_atomic(src: Path, dst: Path) -> None:
    partial = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}.partial")
    try:
        shutil.copyfile(src, partial)
        os.replace(partial, dst)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _float(text: str | None) -> float | None:
    return float(text) if text else None


# --- motion formats ------------------------------------------------------------------------------------


def read_motion(path: str | os.PathLike, *, rel: str | None = None, confidence_threshold: float = 0.8,
                low_confidence: str = "interpolate", max_bad_fraction: float = 0.2,
                landmark_units: str | None = None) -> ParsedMotion:
    """Parse one motion file (OpenFace / Live Link Face / landmark CSV, landmark NPY, clip NPZ).

    Raises `InvalidInput` with the problem (file, line) when the file cannot be used. `rel` is the name the
    problems use (default: the file name); the options are those of `import_corpus`.
    """
    _check_options(None, confidence_threshold, low_confidence, max_bad_fraction)
    options = _Options(fps=None, confidence_threshold=confidence_threshold, low_confidence=low_confidence,
                       max_bad_fraction=max_bad_fraction, allow_partial=False,
                       landmark_units=_check_landmark_units(landmark_units))
    return _read_motion(Path(path), rel or Path(path).name, options, landmark_units=options.landmark_units)


def _read_motion(path: Path, rel: str, options: _Options, *, landmark_units: str | None = None) -> ParsedMotion:
    """`landmark_units`: the declared unit of a landmark file (None: told from its values)."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path, rel)
    if suffix == ".npy":
        return _read_npy(path, rel, landmark_units)
    if suffix != ".csv":
        raise InvalidInput(Problem(rel, f"motion files must be .csv, .npy or .npz, not {suffix or 'no extension'}"))
    header, rows = _read_csv(path, rel)
    if not rows:
        raise InvalidInput(Problem(rel, "has a header but no frames", line=1))
    columns = set(header)
    if columns & {"Timecode", "BlendShapeCount"} or columns & set(_LIVE_LINK_BLENDSHAPES):
        return _read_live_link(header, rows, rel)
    if any(_OPENFACE_HINT.match(c) for c in header):
        return _read_openface(header, rows, rel, options)
    if any(_LANDMARK_COLUMN.match(c) for c in header):
        return _read_landmark_csv(header, rows, rel, landmark_units)
    raise InvalidInput(Problem(rel, f"unknown columns {_names(header, 6)}: not an OpenFace 2, Live Link Face or "
                                    f"landmark CSV", line=1))


def _read_csv(path: Path, rel: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header (stripped) and the non-blank rows with their line numbers (header = line 1)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(Problem(rel, f"is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV")) from None
    except OSError as exc:
        raise InvalidInput(Problem(rel, f"cannot be read ({exc.strerror or exc})")) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise InvalidInput(Problem(rel, "is empty"))
        header = [h.strip() for h in header]
        trailing = bool(header) and header[-1] == ""  # a trailing comma on every line
        if trailing:
            header = header[:-1]
        empty = [i + 1 for i, h in enumerate(header) if not h]
        if empty:
            raise InvalidInput(Problem(rel, f"column {empty[0]} of the header has no name", line=1))
        dupes = [h for h, n in Counter(header).items() if n > 1]
        if dupes:
            raise InvalidInput(Problem(rel, f"the header names {', '.join(dupes)} more than once", line=1))
        rows = []
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue
            if trailing and len(row) == len(header) + 1 and not row[-1].strip():
                row = row[:-1]
            if len(row) != len(header):
                raise InvalidInput(Problem(rel, f"has {len(row)} values but the header has {len(header)} columns",
                                           line=reader.line_num))
            rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise InvalidInput(Problem(rel, f"is not valid CSV ({exc})", line=reader.line_num)) from None
    return header, rows


def _numbers(header: list[str], rows: list[tuple[int, list[str]]], columns: Sequence[str], rel: str) -> np.ndarray:
    """The named columns as float64 [T, len(columns)]; a cell that is not a number is an error with its line."""
    index = [header.index(c) for c in columns]
    cells = [[row[i] for i in index] for _, row in rows]
    try:
        return np.asarray(cells, dtype=str).reshape(len(rows), len(index)).astype(np.float64)
    except ValueError:
        for (line, row) in rows:
            for column, i in zip(columns, index):
                try:
                    float(row[i])
                except ValueError:
                    shown = row[i].strip()
                    raise InvalidInput(Problem(rel, f"column {column} holds {shown!r}, not a number" if shown else
                                                    f"column {column} is empty", line=line)) from None
        raise


def _check_finite(array: np.ndarray, columns: Sequence[str], lines: Sequence[int], rel: str,
                  *, ignore_rows: np.ndarray | None = None) -> None:
    bad = ~np.isfinite(array)
    if ignore_rows is not None:
        bad[ignore_rows] = False
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        value = "NaN" if np.isnan(array[row, col]) else "infinite"
        more = int(bad.sum()) - 1
        raise InvalidInput(Problem(rel, f"column {columns[col]} is {value}" + (
            f" ({more} more NaN/inf value(s) after it)" if more else "") + "; fix or re-export the tracking",
            line=int(lines[row])))


def _rate_from_times(times: np.ndarray, lines: Sequence[int], rel: str) -> float | None:
    """The frame rate of regular timestamps (s); irregular steps are an error naming the line."""
    if len(times) < 2:
        return None
    if not np.all(np.isfinite(times)):
        row = int(np.argwhere(~np.isfinite(times))[0][0])
        raise InvalidInput(Problem(rel, "the timestamp is not a number", line=int(lines[row])))
    steps = np.diff(times)
    step = float(np.median(steps))
    if step <= 0:
        raise InvalidInput(Problem(rel, "the timestamps do not advance; re-export the tracking with timestamps "
                                        "(or drop the time column and give --fps)", line=int(lines[1])))
    # A quarter frame of slack, and at least 1.5 ms because trackers round timestamps to the millisecond.
    irregular = np.abs(steps - step) > max(0.25 * step, 0.0015)
    if irregular.any():
        i = int(np.argmax(irregular))
        raise InvalidInput(Problem(
            rel, f"irregular timestamps: this frame comes {steps[i]:.4f} s after line {lines[i]} where frames are "
                 f"{step:.4f} s apart ({int(irregular.sum())} irregular step(s) in all); frames were dropped, "
                 f"duplicated or reordered — re-export the tracking at a constant frame rate",
            line=int(lines[i + 1])))
    return snap_rate((len(times) - 1) / float(times[-1] - times[0]))


def snap_rate(fps: float) -> float:
    """A measured frame rate as the standard rate it is within RATE_TOLERANCE of, else rounded to 0.001."""
    nearest = min(STANDARD_RATES, key=lambda r: abs(fps - r))
    if abs(fps - nearest) <= RATE_TOLERANCE * nearest:
        return nearest
    return round(fps, 3)


def interpolate_bad_frames(values: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """`values` [T, C] with the rows where `bad` is True replaced by linear interpolation between the
    nearest good rows (rows before the first or after the last good one hold it)."""
    values = np.array(values, dtype=np.float64, copy=True)
    bad = np.asarray(bad, dtype=bool)
    if not bad.any():
        return values
    good = np.flatnonzero(~bad)
    if good.size == 0:
        raise ValueError("every frame is bad; nothing to interpolate from")
    missing = np.flatnonzero(bad)
    for c in range(values.shape[1]):
        values[missing, c] = np.interp(missing, good, values[good, c])
    return values


def _line_ranges(lines: Sequence[int], limit: int = 5) -> str:
    ranges: list[list[int]] = []
    for line in lines:
        if ranges and line == ranges[-1][1] + 1:
            ranges[-1][1] = line
        else:
            ranges.append([line, line])
    shown = [f"{a}" if a == b else f"{a}–{b}" for a, b in ranges[:limit]]
    return ", ".join(shown) + (", …" if len(ranges) > limit else "")


# OpenFace 2 FeatureExtraction / FaceLandmarkVid(Multi) output columns
# (https://github.com/TadasBaltrusaitis/OpenFace/wiki/Output-Format).
_OPENFACE_COLUMN = re.compile(
    r"^(frame|face_id|timestamp|confidence|success"
    r"|gaze_[01]_[xyz]|gaze_angle_[xy]"
    r"|eye_lmk_[xyXYZ]_\d+"
    r"|pose_[TR][xyz]"
    r"|[xyXYZ]_\d+"
    r"|p_scale|p_r[xyz]|p_t[xy]|p_\d+"
    r"|AU\d\d_[rc])$"
)
_OPENFACE_HINT = re.compile(r"^(AU\d\d_[rc]|pose_[TR][xyz]|confidence|success|face_id|gaze_.*|p_scale)$")
_OPENFACE_POSE = ("pose_Rx", "pose_Ry", "pose_Rz", "pose_Tx", "pose_Ty", "pose_Tz")


def _read_openface(header, rows, rel: str, options: _Options) -> ParsedMotion:
    unknown = [c for c in header if not _OPENFACE_COLUMN.match(c)]
    if unknown:
        raise InvalidInput(Problem(rel, f"unknown columns {_names(unknown, 6)}: OpenFace 2 writes no such column; "
                                        f"remove them or export the CSV again", line=1))
    au_columns = [f"{au}_r" for au in OPENFACE_AUS]
    landmark_columns = [f"{axis}_{i}" for i in range(68) for axis in "XYZ"]
    missing = [c for c in au_columns if c not in header]
    if not missing:
        layout_name, channel_columns, units = "openface_au", au_columns, "AU intensity 0..5"
    elif all(c in header for c in landmark_columns):  # a landmark-only export (-3Dfp): 3-D points in mm
        layout_name, channel_columns, units = "landmarks:ibug68", landmark_columns, "mm (OpenFace 3-D landmarks)"
    else:
        raise InvalidInput(Problem(rel, f"missing AU intensity columns {_names(missing, 6)}; run OpenFace "
                                        f"FeatureExtraction with -aus (or -3Dfp for 3-D landmarks)", line=1))
    pose_present = [c for c in _OPENFACE_POSE if c in header]
    if pose_present and len(pose_present) < len(_OPENFACE_POSE):
        absent = [c for c in _OPENFACE_POSE if c not in header]
        raise InvalidInput(Problem(rel, f"has some head pose columns but not {', '.join(absent)}; export all of "
                                        f"them (-pose) or none", line=1))
    lines = [line for line, _ in rows]
    if "face_id" in header:
        faces = set(_numbers(header, rows, ["face_id"], rel)[:, 0].tolist())
        if len(faces) > 1:
            raise InvalidInput(Problem(rel, f"tracks {len(faces)} faces (face_id); keep only the speaker's rows"))
    values = _numbers(header, rows, channel_columns, rel)
    head = _numbers(header, rows, list(_OPENFACE_POSE), rel) if pose_present else None
    fps = None
    if "timestamp" in header:
        fps = _rate_from_times(_numbers(header, rows, ["timestamp"], rel)[:, 0], lines, rel)

    bad = np.zeros(len(rows), dtype=bool)
    if "confidence" in header:
        confidence = _numbers(header, rows, ["confidence"], rel)[:, 0]
        bad |= ~(confidence >= options.confidence_threshold)  # NaN confidence counts as low
    if "success" in header:
        bad |= _numbers(header, rows, ["success"], rel)[:, 0] == 0
    n_bad = int(bad.sum())
    interpolate = n_bad and options.low_confidence == "interpolate"
    used = channel_columns + (list(_OPENFACE_POSE) if head is not None else [])
    both = values if head is None else np.concatenate([values, head], axis=1)
    _check_finite(both, used, lines, rel, ignore_rows=bad if interpolate else None)

    warnings = []
    if n_bad:
        first = lines[int(np.argmax(bad))]
        bad_lines = [line for line, is_bad in zip(lines, bad) if is_bad]
        what = (f"{n_bad} of {len(rows)} frames tracked with low confidence (confidence < "
                f"{options.confidence_threshold:g} or success = 0; lines {_line_ranges(bad_lines)})")
        if options.low_confidence == "reject":
            raise InvalidInput(Problem(rel, f"{what}; rejected under --low-confidence reject — re-track the video or "
                                            f"use --low-confidence interpolate", line=first))
        if n_bad == len(rows) or n_bad / len(rows) > options.max_bad_fraction:
            raise InvalidInput(Problem(rel, f"{what}; that is more than {options.max_bad_fraction:.0%} of the frames, "
                                            f"so it is rejected even under interpolation — re-track the video",
                                       line=first))
        both = interpolate_bad_frames(both, bad)
        values, head = both[:, :len(channel_columns)], (both[:, len(channel_columns):] if head is not None else None)
        warnings.append(Problem(rel, f"interpolated {what}", line=first, severity="warning"))
    if head is not None:
        head = np.concatenate([np.degrees(head[:, :3]), head[:, 3:]], axis=1)
    return ParsedMotion(layout_name, values, head, fps, "openface2", interpolated=n_bad,
                        metadata={"units": f"{units}; head pose deg, mm",
                                  **({"landmark_units": "mm"} if layout_name.startswith("landmarks:") else {})},
                        warnings=warnings)


def _capitalised(name: str) -> str:
    return name[0].upper() + name[1:]


_LIVE_LINK_BLENDSHAPES = tuple(_capitalised(n) for n in ARKIT52)
_LIVE_LINK_HEAD = ("HeadPitch", "HeadYaw", "HeadRoll")  # → rx, ry, rz
_LIVE_LINK_EXTRA = ("Timecode", "BlendShapeCount", "HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw",
                    "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
LIVE_LINK_ROTATION_DEGREES = 180.0  # Live Link's −1..1 rotation curves are the rotator's −180..180°
_TIMECODE = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})[:;](\d{1,3})(?:\.(\d+))?$")


def _read_live_link(header, rows, rel: str) -> ParsedMotion:
    known = set(_LIVE_LINK_BLENDSHAPES) | set(_LIVE_LINK_EXTRA)
    unknown = [c for c in header if c not in known]
    if unknown:
        raise InvalidInput(Problem(rel, f"unknown columns {_names(unknown, 6)}: Live Link Face writes no such column",
                                   line=1))
    missing = [c for c in _LIVE_LINK_BLENDSHAPES if c not in header]
    if missing:
        raise InvalidInput(Problem(rel, f"missing blendshape columns {_names(missing, 6)}; export all 52", line=1))
    lines = [line for line, _ in rows]
    values = _numbers(header, rows, list(_LIVE_LINK_BLENDSHAPES), rel)
    head = None
    if all(c in header for c in _LIVE_LINK_HEAD):
        rotation = _numbers(header, rows, list(_LIVE_LINK_HEAD), rel) * LIVE_LINK_ROTATION_DEGREES
        head = np.concatenate([rotation, np.zeros_like(rotation)], axis=1)
    _check_finite(values if head is None else np.concatenate([values, head[:, :3]], axis=1),
                  list(_LIVE_LINK_BLENDSHAPES) + (list(_LIVE_LINK_HEAD) if head is not None else []), lines, rel)
    fps = None
    if "Timecode" in header:
        fps = _rate_from_timecodes([row[header.index("Timecode")] for _, row in rows], lines, rel)
    return ParsedMotion("arkit52", values, head, fps, "live_link_face",
                        metadata={"units": "blendshape weight 0..1; head pose deg (Live Link rotation × 180)"},
                        no_rate_because="its Timecode column is missing or stays within one second (the timecode's "
                                        "frames per second cannot be told)")


def _rate_from_timecodes(codes: list[str], lines: list[int], rel: str) -> float | None:
    """Capture rate from HH:MM:SS:FF(.fff) timecodes; None when the file spans no second boundary (the
    timecode's own frame base cannot be told then)."""
    parsed = []
    for code, line in zip(codes, lines):
        match = _TIMECODE.match(code.strip())
        if not match:
            raise InvalidInput(Problem(rel, f"Timecode {code.strip()!r} is not HH:MM:SS:FF.fff", line=line))
        h, m, s, ff = (int(g) for g in match.groups()[:4])
        frac = float(f"0.{match.group(5)}") if match.group(5) else 0.0
        parsed.append((h * 3600 + m * 60 + s, ff + frac))
    seconds = [p[0] for p in parsed]
    if len(set(seconds)) < 2:
        return None
    max_ff = max(int(p[1]) for p in parsed)
    base = next((b for b in TIMECODE_BASES if b > max_ff), None)
    if base is None:
        raise InvalidInput(Problem(rel, f"Timecode frame numbers reach {max_ff}, more than any timecode rate allows",
                                   line=lines[[int(p[1]) for p in parsed].index(max_ff)]))
    times = np.array([sec + frames / base for sec, frames in parsed], dtype=np.float64)
    times[times < times[0] - 43200] += 86400  # recorded across midnight
    return _rate_from_times(times, lines, rel)


_LANDMARK_COLUMN = re.compile(r"^([xyz])_?(\d+)$")
_TIME_COLUMNS = ("timestamp", "time")


def _read_landmark_csv(header, rows, rel: str, declared_units: str | None = None) -> ParsedMotion:
    points: dict[str, dict[int, str]] = {"x": {}, "y": {}, "z": {}}
    unknown = []
    for column in header:
        match = _LANDMARK_COLUMN.match(column)
        if match:
            points[match.group(1)][int(match.group(2))] = column
        elif column not in ("frame", *_TIME_COLUMNS):
            unknown.append(column)
    if unknown:
        raise InvalidInput(Problem(rel, f"unknown columns {_names(unknown, 6)}: a landmark CSV has x0.., y0.. "
                                        f"(optionally z0..), frame and timestamp columns", line=1))
    n = len(points["x"])
    for axis in ("x", "y") + (("z",) if points["z"] else ()):
        if sorted(points[axis]) != list(range(n)):
            counts = ", ".join(f"{len(points[a])} {a}" for a in "xyz" if points[a])
            raise InvalidInput(Problem(rel, f"landmark columns do not match ({counts}); each axis needs one column "
                                            f"per point, numbered from 0 without gaps", line=1))
    if n not in LANDMARK_LAYOUTS:
        raise InvalidInput(Problem(rel, f"has {n} landmarks; known schemes are 68 (iBUG) and 468 (MediaPipe)", line=1))
    order = [points[axis].get(i) for i in range(n) for axis in "xyz"]
    present = [c for c in order if c is not None]
    lines = [line for line, _ in rows]
    numbers = _numbers(header, rows, present, rel)
    _check_finite(numbers, present, lines, rel)
    values = np.zeros((len(rows), 3 * n), dtype=np.float64)
    values[:, [i for i, c in enumerate(order) if c is not None]] = numbers
    fps = None
    time_column = next((c for c in _TIME_COLUMNS if c in header), None)
    if time_column:
        fps = _rate_from_times(_numbers(header, rows, [time_column], rel)[:, 0], lines, rel)
    resolved, units = resolve_landmark_units(values.reshape(len(rows), n, 3), rel=rel, declared=declared_units)
    return ParsedMotion(LANDMARK_LAYOUTS[n], resolved.reshape(len(rows), 3 * n), None, fps, "landmark_csv",
                        metadata={**units, "has_z": bool(points["z"])})


def _read_npy(path: Path, rel: str, declared_units: str | None = None) -> ParsedMotion:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidInput(Problem(rel, f"cannot be read as a NumPy array ({exc})")) from None
    if array.ndim != 3 or array.shape[2] not in (2, 3) or array.shape[0] < 1:
        raise InvalidInput(Problem(rel, f"holds an array of shape {array.shape}; landmarks must be "
                                        f"[frames, points, 2 or 3]"))
    if array.shape[1] not in LANDMARK_LAYOUTS:
        raise InvalidInput(Problem(rel, f"has {array.shape[1]} landmarks; known schemes are 68 (iBUG) and "
                                        f"468 (MediaPipe)"))
    if not np.issubdtype(array.dtype, np.number):
        raise InvalidInput(Problem(rel, f"holds {array.dtype} values, not numbers"))
    bad = ~np.isfinite(array)
    if bad.any():
        frame, point, axis = map(int, np.argwhere(bad)[0])
        raise InvalidInput(Problem(rel, f"frame {frame} (counting from 0), point {point}, {'xyz'[axis]} is not finite "
                                        f"({int(bad.sum())} NaN/inf value(s) in all)"))
    points = np.zeros((array.shape[0], array.shape[1], 3), dtype=np.float64)
    points[:, :, : array.shape[2]] = array
    points, units = resolve_landmark_units(points, rel=rel, declared=declared_units)
    return ParsedMotion(LANDMARK_LAYOUTS[array.shape[1]], points.reshape(array.shape[0], -1), None, None,
                        "landmark_npy", metadata={**units, "has_z": array.shape[2] == 3})


def face_sizes(points: np.ndarray) -> np.ndarray:
    """Each frame's face size [T]: the RMS distance of its points [T, N, 2|3] from their centre in x and y."""
    xy = np.asarray(points, dtype=np.float64)[:, :, :2]
    return np.sqrt(((xy - xy.mean(axis=1, keepdims=True)) ** 2).sum(axis=2).mean(axis=1))


def resolve_landmark_units(points: np.ndarray, *, rel: str, declared: str | None = None) -> tuple[np.ndarray, dict]:
    """The landmark file's points [T, N, 3] (metres converted to mm, other units as tracked) and the clip
    metadata that says their unit: `landmark_units` (mm, px or normalised), `landmark_units_from` (declared
    or values) and `units` in words. Raises InvalidInput naming the file when its frames are not in one unit,
    when a declared unit does not fit the face's size, or when the values fit no unit or more than one.

    Told from the values (the face's size is `face_sizes`, median over frames): image coordinates (px,
    normalised) are (nearly) never negative, while metric points (mm, m) surround their origin — a face
    model's centre — or lie at a camera's depth far beyond the face's size; within each kind the size
    picks the unit by FACE_SIZE_RANGES.
    """
    sizes = face_sizes(points)
    tracked = sizes > 0
    if not tracked.any():
        raise InvalidInput(Problem(rel, "every frame has all its landmarks at one place; the tracking failed — "
                                        "track the video again"))
    small, large = int(np.argmin(np.where(tracked, sizes, np.inf))), int(np.argmax(sizes))
    if sizes[large] > MAX_SIZE_CHANGE * sizes[small]:
        raise InvalidInput(Problem(rel, f"the face is {sizes[large] / sizes[small]:.0f} times larger in frame "
                                        f"{large} than in frame {small} (counting from 0): its frames are in "
                                        f"different units (e.g. pixels and normalised coordinates); export the "
                                        f"file in one unit"))
    size = float(np.median(sizes[tracked]))
    if declared is not None:
        low, high = FACE_SIZE_RANGES[declared]
        if not low <= size <= high:
            raise InvalidInput(Problem(rel, f"its landmarks are declared in {declared}, but the face then measures "
                                            f"{size:.3g} {declared} (RMS distance of the points from their centre; "
                                            f"{_expected_size(declared)}); check the file's unit"))
        unit, source = declared, "declared"
    else:
        unit, source = _unit_from_values(points, size, rel), "values"
    if unit == "m":
        points = points * 1000.0
    words = {"mm": "mm", "m": "mm (converted from m)", "px": "px (image pixels, as tracked)",
             "normalised": "normalised image coordinates (as tracked)"}[unit]
    return points, {"units": words, "landmark_units": "mm" if unit == "m" else unit, "landmark_units_from": source}


def _expected_size(unit: str) -> str:
    low, high = FACE_SIZE_RANGES[unit]
    if math.isinf(high):
        return f"a face in {unit} measures at least {low:g}"
    return f"a face in {unit} measures {low:g} to {high:g}" if low else f"a face in {unit} measures at most {high:g}"


def _unit_from_values(points: np.ndarray, size: float, rel: str) -> str:
    """The one unit the values fit (see `resolve_landmark_units`); InvalidInput when none or both fit."""
    xy = points[:, :, :2]
    negative = float((xy < 0).mean())
    depth = float(np.median(points[:, :, 2]))
    metric = negative >= 0.2 or depth > 3 * size  # around a face model's origin, or a camera's depth away
    image = negative <= 0.05 and not depth > 3 * size
    kinds = ("mm", "m") if metric else ("px", "normalised") if image else ()
    fits = [u for u in kinds if FACE_SIZE_RANGES[u][0] <= size <= FACE_SIZE_RANGES[u][1]]
    if len(fits) == 1:
        return fits[0]
    seen = (f"the face measures {size:.3g} (RMS distance of the points from their centre) and {negative:.0%} of "
            f"the x and y values are negative")
    raise InvalidInput(Problem(rel, f"the unit of its landmarks cannot be told from the values ({seen}); declare "
                                    f"it with a landmark_units column in metadata.csv or --landmark-units "
                                    f"({', '.join(LANDMARK_UNITS)}), or convert the points to one of these units"))


def _read_npz(path: Path, rel: str) -> ParsedMotion:
    try:
        clip = MotionClip.load(path)
    except MotionError as exc:
        raise InvalidInput(Problem(rel, str(exc).removeprefix(f"{path.name}: "))) from None
    return ParsedMotion(clip.layout, clip.values, clip.head_pose, clip.fps, "motion_clip", channels=clip.channels,
                        metadata=dict(clip.metadata), basis=clip.basis)


# --- archives ------------------------------------------------------------------------------------------


def extract_zip(archive: str | os.PathLike, target: str | os.PathLike, *,
                limits: ArchiveLimits = ArchiveLimits()) -> list[Problem]:
    """Extract `archive` into the folder `target` after checking every entry; returns the problems.

    Refused, with nothing extracted: absolute paths, `..` components, symlinks, encrypted entries, more
    than `limits.max_files` entries, more than `limits.max_total_bytes` uncompressed, and entries whose
    compression ratio exceeds `limits.max_ratio`. Sizes are enforced again while extracting, so headers
    that lie about sizes do not help.
    """
    archive, target = Path(archive), Path(target)
    name = archive.name
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        return [Problem(name, f"is not a readable .zip archive ({exc})")]
    with zf:
        infos = zf.infolist()
        problems = _zip_problems(name, infos, limits)
        if problems:
            return problems
        total = 0
        root = target.resolve()
        for info in infos:
            parts = _zip_parts(info.filename)
            dest = root.joinpath(*parts)
            if not dest.resolve().is_relative_to(root):  # belt and braces after _zip_problems
                return [Problem(name, f"entry {info.filename!r} would be written outside the folder")]
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            try:
                with zf.open(info) as src, open(dest, "wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        total += len(chunk)
                        if written > info.file_size or total > limits.max_total_bytes:
                            return [Problem(name, f"entry {info.filename!r} holds more than its header says, or the "
                                                  f"archive exceeds {limits.max_total_bytes} bytes uncompressed; "
                                                  f"refused as a possible zip bomb")]
                        out.write(chunk)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
                return [Problem(name, f"entry {info.filename!r} cannot be extracted ({exc})")]
    return []


def _zip_parts(filename: str) -> list[str]:
    return [p for p in filename.replace("\\", "/").split("/") if p not in ("", ".")]


def _zip_problems(name: str, infos: list[zipfile.ZipInfo], limits: ArchiveLimits) -> list[Problem]:
    problems = []
    if len(infos) > limits.max_files:
        problems.append(Problem(name, f"holds {len(infos)} entries, more than the limit of {limits.max_files}; "
                                      f"split the corpus or raise the limit"))
    total = sum(i.file_size for i in infos)
    duplicates = [n for n, k in Counter("/".join(_zip_parts(i.filename)) for i in infos).items() if k > 1]
    if duplicates:
        problems.append(Problem(name, f"holds {_names(duplicates)} more than once; make the archive again"))
    if total > limits.max_total_bytes:
        problems.append(Problem(name, f"unpacks to {total} bytes, more than the limit of {limits.max_total_bytes}; "
                                      f"split the corpus or raise the limit"))
    for info in infos:
        filename = info.filename
        posix = filename.replace("\\", "/")
        if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
            problems.append(Problem(name, f"entry {filename!r} has an absolute path; refused (zip-slip)"))
        elif ".." in posix.split("/"):
            problems.append(Problem(name, f"entry {filename!r} climbs out of the folder with '..'; refused (zip-slip)"))
        elif stat.S_ISLNK(info.external_attr >> 16):
            problems.append(Problem(name, f"entry {filename!r} is a symbolic link; refused (zip-slip)"))
        elif info.flag_bits & 0x1:
            problems.append(Problem(name, f"entry {filename!r} is encrypted; make the archive without a password"))
        elif (info.file_size >= limits.ratio_min_bytes
              and info.file_size > limits.max_ratio * max(info.compress_size, 1)):
            ratio = info.file_size / max(info.compress_size, 1)
            problems.append(Problem(name, f"entry {filename!r} expands {ratio:.0f} times (limit "
                                          f"{limits.max_ratio:g}); refused as a possible zip bomb"))
    return problems


# --- splits --------------------------------------------------------------------------------------------


def assign_split(items: Iterable, by: str = "speaker", ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
                 *, notes: list[str] | None = None) -> dict[str, str]:
    """Map each utterance name to "train", "val" or "test", the same for the same items and seed.

    `items` are ImportedUtterance-like objects (with `name` and `speaker`) or (name, speaker) pairs.
    `by="speaker"` keeps every speaker's utterances in one split (an utterance without a speaker counts
    as a speaker of its own); `by="utterance"` splits utterances freely. The units are shuffled with the
    seed and cut by the ratios (rounded); with at least 3 units every split whose ratio is above zero
    gets at least one. With fewer than 3 speakers a speaker split cannot give three disjoint non-empty
    splits, so it falls back to splitting utterances (val and test then share speakers with train) and
    says so in `notes`; fewer than 3 units in all go to train, also noted.
    """
    if by not in ("speaker", "utterance"):
        raise ValueError(f"split by 'speaker' or 'utterance', not {by!r}")
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != 3 or any(r < 0 or not math.isfinite(r) for r in ratios) or not math.isclose(sum(ratios), 1.0,
                                                                                                   abs_tol=1e-6):
        raise ValueError(f"split ratios must be three non-negative numbers (train, val, test) adding up to 1, "
                         f"got {ratios}")
    notes = notes if notes is not None else []
    pairs = []
    for item in items:
        name, speaker = (item if isinstance(item, (tuple, list)) else (item.name, item.speaker))
        pairs.append((str(name), str(speaker or "")))
    names = sorted(n for n, _ in pairs)
    if len(set(names)) != len(names):
        raise ValueError("utterance names must be unique to split them")
    units: dict[str, list[str]] = defaultdict(list)
    if by == "speaker":
        anonymous = sum(1 for _, s in pairs if not s)
        for name, speaker in pairs:
            units[f"speaker:{speaker}" if speaker else f"utterance:{name}"].append(name)
        speakers = sum(1 for k in units if k.startswith("speaker:"))
        if anonymous:
            notes.append(f"{anonymous} utterance(s) have no speaker; each counts as a speaker of its own")
        if len(units) < 3 and len(pairs) >= 3:
            notes.append(f"only {speakers} speaker(s): a speaker-disjoint train/val/test split needs at least 3, so "
                         f"utterances were split instead (val and test share speakers with train)")
            units = {f"utterance:{n}": [n] for n, _ in pairs}
    else:
        units = {f"utterance:{n}": [n] for n, _ in pairs}
    keys = sorted(units)
    random.Random(seed).shuffle(keys)
    counts = _split_counts(len(keys), ratios)
    if len(keys) < 3:
        notes.append(f"only {len(keys)} utterance(s): all go to train")
    split = {}
    start = 0
    for split_name, count in zip(SPLITS, counts):
        for key in keys[start:start + count]:
            for name in units[key]:
                split[name] = split_name
        start += count
    return dict(sorted(split.items()))


def _split_counts(n: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    if n < 3:
        return n, 0, 0
    val, test = round(n * ratios[1]), round(n * ratios[2])
    val = max(val, 1) if ratios[1] > 0 else 0
    test = max(test, 1) if ratios[2] > 0 else 0
    while n - val - test < (1 if ratios[0] > 0 else 0):
        if val >= test and val > (1 if ratios[1] > 0 else 0):
            val -= 1
        elif test > (1 if ratios[2] > 0 else 0):
            test -= 1
        else:
            break
    return n - val - test, val, test


def split_counts(split: dict[str, str]) -> dict[str, int]:
    counts = Counter(split.values())
    return {name: counts.get(name, 0) for name in SPLITS}


__all__ = ["ArchiveLimits", "ImportResult", "ImportedUtterance", "InvalidInput", "ParsedMotion", "Problem",
           "assign_split", "extract_zip", "import_corpus", "interpolate_bad_frames", "read_motion", "snap_rate",
           "split_counts", "AUDIO_SUFFIXES", "MOTION_SUFFIXES", "LIVE_LINK_ROTATION_DEGREES"]
