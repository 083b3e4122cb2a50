"""Stimulus bundles: a study's videos with everything needed to publish, rerun or audit them, in one zip
that checks itself (`manage.py export_stimuli`).

A bundle holds `stimuli/<token>.mp4` (the opaque tokens participants saw), `manifest.csv` and
`manifest.json` (one row per video), `study.yaml` (the study version's YAML, byte for byte),
`mturk_batch.csv` (token and public URL of every video, for requesters with their own HIT template),
`README.txt` and `CHECKSUMS.sha256` (`sha256sum -c` format over every other file).

A blind bundle is for people who must not know which video is which: its manifest keeps only the token,
the embodiment (visible in the video anyway) and technical facts. Everything else — condition, utterance,
model, checkpoint, seed, render settings and the study's YAML, which names the conditions — goes into a
separate key zip written next to it (`NAME.key.zip` for `NAME.zip`).

The same study exports byte for byte the same: entries are sorted, timestamps are the study version's,
and no export time, path or host is written anywhere.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError

from . import __version__ as PLATFORM_VERSION
from . import selectors, services
from .models import Condition, Corpus, Stimulus, StudyVersion
from .spec import treatments

PLATFORM = "the face-motion evaluation platform (evalsite)"
BUNDLE_FORMAT = "evalsite-stimulus-bundle/1"
KEY_FORMAT = "evalsite-condition-key/1"
CHECKSUMS = "CHECKSUMS.sha256"
CHUNK = 1024 * 1024

# Why a video is in the study, in the order the manifest lists them.
ROLES = ("rated", "training", "attention_check", "av_check")

FULL_COLUMNS = [
    "token", "file", "role", "utterance", "corpus", "speaker", "transcript", "condition", "condition_kind",
    "embodiment", "model", "checkpoint", "seed", "render_settings", "expected_answer", "duration_s",
    "audio_duration_s", "fps", "width", "height", "video_codec", "audio_codec", "size_bytes", "sha256",
    "is_placeholder",
]
# What anyone may see: nothing that tells conditions, models or utterances apart beyond the video itself.
BLIND_COLUMNS = [
    "token", "file", "embodiment", "duration_s", "audio_duration_s", "fps", "width", "height", "video_codec",
    "audio_codec", "size_bytes", "sha256",
]
# The key repeats the embodiment so it reads on its own.
KEY_COLUMNS = ["token"] + [c for c in FULL_COLUMNS if c not in BLIND_COLUMNS or c == "embodiment"]
RECIPE_FACTS = ("model", "checkpoint", "seed")  # columns of their own; the rest of a recipe is its settings

KEY_FILES = ("README.txt", "condition_key.csv", "condition_key.json", "study.yaml")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{8,32}$")
MIN_NAME_LENGTH = 4  # shorter names occur by chance inside random tokens


class BundleError(Exception):
    """Export or verification refused; `problems` lists every reason, one line each."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.problems = problems or []


# ----------------------------------------------------------------------------------------------- reads
def study_stimuli(version: StudyVersion) -> list[tuple[Stimulus, str]]:
    """Every video a participant of this study version can be shown, with its role (see ROLES).

    The same rules as the participant flow (services._create_trials): the videos made for the study's
    render settings (its variant) of the rated utterances in every condition x embodiment; the practice
    utterances (corpus utterances outside the rated ones that have every treatment's video) when there is a
    training page; the attention-check clips when a trials page asks for checks; the corpus's A/V check clip
    when there is an av_check page.
    """
    spec = version.spec
    corpus = Corpus.objects.get(name=spec["stimuli"]["corpus"])
    cells = set(treatments(spec))
    pages = spec["pages"]
    rated = set(services.study_utterance_names(spec))
    of_corpus = Stimulus.objects.filter(utterance__corpus=corpus)
    in_corpus = of_corpus.filter(selectors.in_study_variant(spec)).select_related("utterance__corpus", "condition")
    special = (Condition.Kind.ATTENTION_CHECK, Condition.Kind.AV_CHECK)
    treated = [s for s in in_corpus.exclude(condition__kind__in=special) if (s.condition.name, s.embodiment) in cells]
    chosen: dict[int, tuple[Stimulus, str]] = {s.pk: (s, "rated") for s in treated if s.utterance.name in rated}
    if any(p["type"] == "training" for p in pages):
        # Like the participant flow: an utterance with a check clip in any variant is never practice.
        check_clips = set(of_corpus.filter(condition__kind__in=special).values_list("utterance__name", flat=True))
        by_utterance: dict[str, set] = {}
        for s in treated:
            by_utterance.setdefault(s.utterance.name, set()).add((s.condition.name, s.embodiment))
        practice = {u for u, have in by_utterance.items() if u not in rated | check_clips and have >= cells}
        chosen.update({s.pk: (s, "training") for s in treated if s.utterance.name in practice})
    if any(p["type"] == "trials" and p.get("attention_checks") for p in pages):
        chosen.update({s.pk: (s, "attention_check") for s in selectors.attention_check_stimuli(spec, corpus)})
    if any(p["type"] == "av_check" for p in pages):
        av = selectors.av_check_stimulus(spec)
        if av is not None:
            chosen[av.pk] = (in_corpus.get(pk=av.pk), "av_check")
    return sorted(chosen.values(), key=lambda sr: (ROLES.index(sr[1]), sr[0].utterance.name, sr[0].condition.name,
                                                   sr[0].embodiment, sr[0].token))


def manifest_row(stimulus: Stimulus, role: str) -> dict:
    """Every column of FULL_COLUMNS for one video (JSON-ready values)."""
    recipe = dict(stimulus.recipe or {})
    model = recipe.get("model") or ""
    if not model and stimulus.condition.kind == Condition.Kind.MODEL:
        model = stimulus.condition.params.get("model", "")
    return {
        "token": stimulus.token,
        "file": video_name(stimulus.token),
        "role": role,
        "utterance": stimulus.utterance.name,
        "corpus": stimulus.utterance.corpus.name,
        "speaker": stimulus.utterance.speaker,
        "transcript": stimulus.utterance.transcript,
        "condition": stimulus.condition.name,
        "condition_kind": stimulus.condition.kind,
        "embodiment": stimulus.embodiment,
        "model": model,
        "checkpoint": recipe.get("checkpoint") or "",
        "seed": recipe.get("seed"),
        "render_settings": {k: v for k, v in recipe.items() if k not in RECIPE_FACTS},
        "expected_answer": stimulus.expected_answer,
        "duration_s": stimulus.duration_s,
        "audio_duration_s": stimulus.audio_duration_s,
        "fps": stimulus.fps,
        "width": stimulus.width,
        "height": stimulus.height,
        "video_codec": stimulus.video_codec,
        "audio_codec": stimulus.audio_codec,
        "size_bytes": stimulus.size_bytes,
        "sha256": stimulus.sha256,
        "is_placeholder": stimulus.is_placeholder,
    }


def video_name(token: str) -> str:
    return f"stimuli/{token}.mp4"


def key_path_for(out: Path | str) -> Path:
    """Where a blind bundle's condition key goes: `NAME.key.zip` beside `NAME.zip`."""
    out = Path(out)
    stem = out.name[:-4] if out.name.lower().endswith(".zip") else out.name
    return out.with_name(stem + ".key.zip")


def default_base_url() -> str:
    return settings.PUBLIC_BASE_URL.rstrip("/") + "/bundle/"


# ----------------------------------------------------------------------------------------------- export
@dataclass
class ExportResult:
    path: Path
    key_path: Path | None
    n_videos: int
    n_placeholders: int
    video_bytes: int
    warnings: list[str] = field(default_factory=list)


def export_bundle(*, version: StudyVersion, out: Path | str, blind: bool = False, base_url: str | None = None,
                  force: bool = False, progress=None) -> ExportResult:
    """Write the bundle of one study version to `out` (and, when blind, its key beside it).

    Every video is checked against its row (present, size, sha256) before anything is written; each problem
    names the token. Files appear under their final names only when complete (temporary name, then rename).
    `progress(done, total, stage)` is called per video while checking and while packing.
    """
    out = Path(out)
    key_out = key_path_for(out) if blind else None
    for target in (out, key_out):
        if target is not None and target.exists() and not force:
            raise BundleError(f"{target} exists already; pass --force to replace it")
    if not out.parent.is_dir():
        raise BundleError(f"the folder {out.parent} does not exist")
    chosen = study_stimuli(version)
    if not chosen:
        raise BundleError(f"study {version.study.slug} v{version.number} has no stimuli to export")
    rows = [manifest_row(s, role) for s, role in chosen]
    sources = {s.token: Path(settings.MEDIA_ROOT) / s.file for s, _ in chosen}
    total = 2 * len(rows)

    def tick(done, stage):
        if progress:
            progress(done, total, stage)

    problems = []
    for i, row in enumerate(rows, start=1):
        problem = _video_problem(sources[row["token"]], row)
        if problem:
            cell = f"{row['condition']}/{row['embodiment']}/{row['utterance']}"
            problems.append(f"stimulus {row['token']} ({cell}): {problem}")
        tick(i, "checking")
    if problems:
        raise BundleError(f"{len(problems)} stimulus file(s) do not match the database; nothing was written", problems)

    base_url = (base_url or default_base_url()).rstrip("/") + "/"
    n_placeholders = sum(1 for r in rows if r["is_placeholder"])
    when = version.created_at
    facts = {"slug": version.study.slug, "version": version.number, "date": when.date().isoformat()}
    by_token = sorted(rows, key=lambda r: r["token"])
    texts = {
        "mturk_batch.csv": _csv_text(["stimulus_token", "video_url"],
                                     [{"stimulus_token": r["token"], "video_url": base_url + r["token"] + ".mp4"}
                                      for r in by_token]),
    }
    header = {"format": BUNDLE_FORMAT, "platform": PLATFORM, "platform_version": PLATFORM_VERSION,
              "study": facts["slug"], "version": facts["version"], "version_date": facts["date"], "blind": blind}
    key_texts = None
    if blind:
        blind_rows = [{c: r[c] for c in BLIND_COLUMNS} for r in by_token]
        key_rows = [{c: r[c] for c in KEY_COLUMNS} for r in by_token]
        texts["manifest.csv"] = _csv_text(BLIND_COLUMNS, blind_rows)
        texts["manifest.json"] = _json_text({**header, "columns": BLIND_COLUMNS, "stimuli": blind_rows})
        texts["README.txt"] = _readme(facts, n=len(rows), placeholders=n_placeholders, blind=True, base_url=base_url)
        key_texts = {
            "condition_key.csv": _csv_text(KEY_COLUMNS, key_rows),
            "condition_key.json": _json_text({"format": KEY_FORMAT, "platform": PLATFORM,
                                              "platform_version": PLATFORM_VERSION, "study": facts["slug"],
                                              "version": facts["version"], "version_date": facts["date"],
                                              "columns": KEY_COLUMNS, "stimuli": key_rows}),
            "study.yaml": version.spec_yaml,
            "README.txt": _key_readme(facts, n=len(rows)),
        }
    else:
        texts["manifest.csv"] = _csv_text(FULL_COLUMNS, rows)
        texts["manifest.json"] = _json_text({**header, "title": version.study.title, "columns": FULL_COLUMNS,
                                             "stimuli": rows})
        texts["study.yaml"] = version.spec_yaml
        texts["README.txt"] = _readme(facts, n=len(rows), placeholders=n_placeholders, blind=False, base_url=base_url)

    written: list[tuple[str, Path]] = []  # (temporary, final)
    try:
        written.append((_write_zip(out, when, {n: t.encode("utf-8") for n, t in texts.items()},
                                   [(video_name(r["token"]), sources[r["token"]], r) for r in by_token],
                                   lambda i: tick(len(rows) + i, "packing")), out))
        if key_texts is not None:
            written.append((_write_zip(key_out, when, {n: t.encode("utf-8") for n, t in key_texts.items()}, [],
                                       None), key_out))
        # The key first: a blind bundle never appears without its key.
        for tmp, final in reversed(written):
            os.replace(tmp, final)
    except BaseException:
        for tmp, _ in written:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    warnings = []
    if blind:
        leaked = [n for n in _names_of(rows) if n in facts["slug"]]
        if leaked:
            warnings.append(f"the study's slug {facts['slug']!r}, written in the blind bundle for citation, "
                            f"contains {', '.join(sorted(leaked))}")
    return ExportResult(out, key_out, len(rows), n_placeholders, sum(r["size_bytes"] for r in rows), warnings)


def _video_problem(path: Path, row: dict) -> str | None:
    if not path.is_file():
        return f"the file {path} is missing"
    size = path.stat().st_size
    if size != row["size_bytes"]:
        return f"the file has {size} bytes, the database says {row['size_bytes']}"
    if _sha256_file(path) != row["sha256"]:
        return "the file's sha256 differs from the database's (the file changed after it was registered)"
    return None


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _zip_info(name: str, when, compress: int) -> zipfile.ZipInfo:
    date_time = (max(when.year, 1980), when.month, when.day, when.hour, when.minute, when.second)
    info = zipfile.ZipInfo(name, date_time)
    info.compress_type = compress
    info.create_system = 3  # Unix, on every host, so the bytes do not depend on where it ran
    info.external_attr = 0o644 << 16
    return info


def _write_zip(final: Path, when, texts: dict[str, bytes], videos: list[tuple[str, Path, dict]], tick) -> str:
    """A complete zip under a temporary name beside `final`; returns that name. Videos are stored (they are
    compressed already), texts deflated; CHECKSUMS.sha256 covers every other entry."""
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would follow the bundle through the rename
    checksums = {name: hashlib.sha256(data).hexdigest() for name, data in texts.items()}
    for name, _, row in videos:
        checksums[name] = row["sha256"]
    checksums_text = "".join(f"{checksums[n]}  {n}\n" for n in sorted(checksums)).encode()
    entries: dict[str, object] = {**texts, CHECKSUMS: checksums_text, **{n: (p, r) for n, p, r in videos}}
    try:
        _fill_zip(tmp, when, entries, tick)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _fill_zip(tmp: str, when, entries: dict, tick) -> None:
    with zipfile.ZipFile(tmp, "w") as zf:
        done = 0
        for name in sorted(entries):
            entry = entries[name]
            if isinstance(entry, bytes):
                zf.writestr(_zip_info(name, when, zipfile.ZIP_DEFLATED), entry)
                continue
            path, row = entry
            h = hashlib.sha256()
            with open(path, "rb") as src, zf.open(_zip_info(name, when, zipfile.ZIP_STORED), "w",
                                                  force_zip64=row["size_bytes"] >= zipfile.ZIP64_LIMIT) as dst:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    dst.write(chunk)
            if h.hexdigest() != row["sha256"]:
                raise BundleError(f"stimulus {row['token']}: the file changed while it was being packed; "
                                  "nothing was written")
            done += 1
            if tick:
                tick(done)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def _csv_text(columns: list[str], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row[c]) for c in columns])
    return buffer.getvalue()


def _json_text(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def _names_of(rows: list[dict]) -> set[str]:
    """The names a blind bundle must not reveal: conditions, utterances and models."""
    names = set()
    for row in rows:
        names.update(str(row.get(k) or "") for k in ("condition", "utterance", "model"))
    return {n for n in names if len(n) >= MIN_NAME_LENGTH}


def _readme(facts: dict, *, n: int, placeholders: int, blind: bool, base_url: str) -> str:
    # A blind bundle's README is read by people who must not learn the design: it names no condition,
    # utterance or model (the tests scan it for them).
    cite = (f"{facts['slug']}, study version {facts['version']} ({facts['date']}); stimulus bundle exported with "
            f"{PLATFORM}.")
    lines = [
        f"Stimulus bundle of the study {facts['slug']}, version {facts['version']} ({facts['date']})",
        f"Exported with {PLATFORM}.",
        "",
        "What this bundle holds",
        f"  stimuli/<token>.mp4  {n} video(s); each file is named by a random token, the one participants saw.",
    ]
    if placeholders:
        lines.append(f"                       {placeholders} of them are placeholder clips (synthetic speech and a "
                     "drawn face), made until rendered stimuli exist.")
    if blind:
        lines += [
            "  manifest.csv / .json  one row per video: token, embodiment and technical facts (duration, frame",
            "                        rate, size in pixels and bytes, codecs, sha256).",
            "  mturk_batch.csv       stimulus_token,video_url for requesters who use their own HIT template.",
            "  CHECKSUMS.sha256      the sha256 of every other file in the bundle.",
            "",
            "This bundle is BLIND: nothing in it tells which condition, model or utterance a video shows. That",
            "key travels separately, next to the bundle, named like it with .key.zip in place of .zip.",
        ]
    else:
        lines += [
            "  manifest.csv / .json  one row per video: token, role in the study, utterance, corpus, speaker,",
            "                        transcript, condition and its kind, embodiment, model and checkpoint, seed,",
            "                        render settings (JSON), expected answer of check clips, duration, frame rate,",
            "                        size in pixels and bytes, codecs, sha256, placeholder or not.",
            "  study.yaml            the study as declared, byte for byte (this version).",
            "  mturk_batch.csv       stimulus_token,video_url for requesters who use their own HIT template.",
            "  CHECKSUMS.sha256      the sha256 of every other file in the bundle.",
        ]
    lines += [
        "",
        "Hosting the videos",
        f"  mturk_batch.csv points at {base_url}<token>.mp4. Upload the files of stimuli/ so that each is",
        "  served at that address (or export again with --base-url), then use the CSV as a Mechanical Turk",
        "  batch input file: your HIT template refers to ${video_url} and ${stimulus_token}.",
        "",
        "How to verify",
        "  unzip BUNDLE.zip -d bundle && cd bundle && sha256sum -c CHECKSUMS.sha256",
        "  or, on the platform: python manage.py export_stimuli --verify BUNDLE.zip",
        "",
        "How to cite",
        f"  {cite}",
        "",
    ]
    return "\n".join(lines)


def _key_readme(facts: dict, *, n: int) -> str:
    return "\n".join([
        f"Condition key of the blind stimulus bundle of the study {facts['slug']}, version {facts['version']} "
        f"({facts['date']})",
        f"Exported with {PLATFORM}.",
        "",
        f"  condition_key.csv / .json  {n} row(s): token -> role, utterance, corpus, speaker, transcript,",
        "                             condition and its kind, model, checkpoint, seed, render settings (JSON),",
        "                             expected answer of check clips, placeholder or not, embodiment.",
        "  study.yaml                  the study as declared, byte for byte (this version).",
        "  CHECKSUMS.sha256            the sha256 of every other file here.",
        "",
        "Keep this file away from anyone who rates or codes the videos blind.",
        "Verify: sha256sum -c CHECKSUMS.sha256 after unzipping, or python manage.py export_stimuli --verify KEY.zip",
        "",
    ])


# ----------------------------------------------------------------------------------------------- verify
@dataclass
class VerifyReport:
    path: Path
    kind: str  # "bundle" or "key"
    blind: bool = False
    study: str = ""
    version: int | None = None
    files_checked: int = 0
    videos_checked: int = 0
    names_checked: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        what = f"{self.study} v{self.version}" if self.study else "unknown study"
        if self.kind == "key":
            return f"{self.path}: condition key of {what}; {self.files_checked} file(s) match CHECKSUMS.sha256"
        text = (f"{self.path}: {'blind ' if self.blind else ''}bundle of {what}; {self.files_checked} file(s) match "
                f"CHECKSUMS.sha256, {self.videos_checked} video(s) match the manifest's sha256 and sizes")
        if self.blind:
            text += (f"; no file name reveals any of {self.names_checked} condition/utterance/model name(s)"
                     if self.names_checked else "; file names are tokens only")
        return text


def verify_bundle(path: Path | str, *, names_for=None) -> VerifyReport:
    """Recheck a bundle (or a key zip): every file against CHECKSUMS.sha256, every video against the
    manifest's sha256 and size, and, for a blind bundle, that its file names are its fixed names or the
    manifest's tokens and contain no condition, utterance or model name. Those names come from the key
    beside the bundle when it is there, and from `names_for(study_slug, version_number)` (e.g. study_names,
    which asks the database)."""
    path = Path(path)
    report = VerifyReport(path, kind="bundle")
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        report.problems.append(f"{path}: not a readable zip ({exc})")
        return report
    with zf:
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
        if "condition_key.json" in names:
            report.kind = "key"
        hashes = {}
        for name in names:
            try:
                hashes[name] = _hash_member(zf, name)
            except (zipfile.BadZipFile, OSError, zlib.error) as exc:
                report.problems.append(f"{name}: unreadable ({exc})")
        _check_checksums(zf, names, hashes, report)
        if report.kind == "key":
            _check_key(zf, names, report)
        else:
            _check_manifest(zf, names, hashes, report, names_for)
    return report


def study_names(slug: str, number) -> set[str]:
    """The condition, utterance and model names of a study version's videos (empty if it is not here)."""
    try:
        version = StudyVersion.objects.filter(study__slug=slug, number=number).select_related("study").first()
    except (DatabaseError, ValueError, TypeError):  # no database here, or a manifest with a strange version
        return set()
    if version is None:
        return set()
    return _names_of([manifest_row(s, role) for s, role in study_stimuli(version)])


def _hash_member(zf: zipfile.ZipFile, name: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with zf.open(name) as fh:  # zipfile also checks each member's CRC as it is read
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _check_checksums(zf, names, hashes, report: VerifyReport) -> None:
    if CHECKSUMS not in names:
        report.problems.append(f"{CHECKSUMS} is missing")
        return
    listed = {}
    for i, line in enumerate(zf.read(CHECKSUMS).decode("utf-8", "replace").splitlines(), start=1):
        match = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if not match:
            report.problems.append(f"{CHECKSUMS} line {i}: not `<sha256>  <file>`")
            continue
        listed[match.group(2)] = match.group(1)
    for name, digest in sorted(listed.items()):
        if name not in hashes:
            if name not in names:
                report.problems.append(f"{name}: listed in {CHECKSUMS} but not in the bundle")
        elif hashes[name][0] != digest:
            report.problems.append(f"{name}: sha256 {hashes[name][0]} differs from {CHECKSUMS} ({digest})")
        else:
            report.files_checked += 1
    for name in sorted(set(names) - set(listed) - {CHECKSUMS}):
        report.problems.append(f"{name}: in the bundle but not listed in {CHECKSUMS}")


def _read_json(zf, name: str, report: VerifyReport):
    try:
        return json.loads(zf.read(name))
    except KeyError:
        report.problems.append(f"{name} is missing")
    except (ValueError, zipfile.BadZipFile, zlib.error) as exc:
        report.problems.append(f"{name}: not readable JSON ({exc})")
    return None


def _check_manifest(zf, names, hashes, report: VerifyReport, names_for) -> None:
    manifest = _read_json(zf, "manifest.json", report)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("stimuli"), list):
        if manifest is not None:
            report.problems.append("manifest.json has no list of stimuli")
        return
    report.blind = bool(manifest.get("blind"))
    report.study, report.version = str(manifest.get("study", "")), manifest.get("version")
    rows = manifest["stimuli"]
    tokens = set()
    for row in rows:
        token, name = str(row.get("token", "")), str(row.get("file", ""))
        tokens.add(token)
        if name != video_name(token):
            report.problems.append(f"manifest row {token}: file {name!r} is not {video_name(token)!r}")
        if name not in hashes:
            if name not in names:
                report.problems.append(f"{name}: in the manifest but not in the bundle")
            continue
        digest, size = hashes[name]
        bad = []
        if digest != row.get("sha256"):
            bad.append(f"sha256 {digest} differs from the manifest's {row.get('sha256')}")
        if size != row.get("size_bytes"):
            bad.append(f"{size} bytes, the manifest says {row.get('size_bytes')}")
        if bad:
            report.problems.append(f"{name}: " + "; ".join(bad))
        else:
            report.videos_checked += 1
    listed_videos = {video_name(t) for t in tokens}
    for name in sorted(n for n in names if n.startswith("stimuli/") and n not in listed_videos):
        report.problems.append(f"{name}: a video the manifest does not list")
    _check_manifest_csv(zf, rows, report)
    expected = ["README.txt", "mturk_batch.csv"] + ([] if report.blind else ["study.yaml"])
    report.problems.extend(f"{name} is missing" for name in expected if name not in names)
    if report.blind:
        forbidden = set(names_for(report.study, report.version)) if names_for else set()
        forbidden |= _check_key_beside(tokens, report)
        _check_blinding(names, tokens, forbidden, report)


def _check_manifest_csv(zf, rows, report: VerifyReport) -> None:
    try:
        csv_rows = list(csv.DictReader(io.StringIO(zf.read("manifest.csv").decode("utf-8"))))
    except KeyError:
        report.problems.append("manifest.csv is missing")
        return
    except (UnicodeDecodeError, zipfile.BadZipFile, zlib.error) as exc:
        report.problems.append(f"manifest.csv: unreadable ({exc})")
        return
    want = {str(r.get("token")): str(r.get("sha256")) for r in rows}
    have = {r.get("token", ""): r.get("sha256", "") for r in csv_rows}
    if want != have:
        report.problems.append("manifest.csv and manifest.json disagree on the tokens or their sha256")


def _check_key_beside(tokens: set[str], report: VerifyReport) -> set[str]:
    """The names in the key beside a blind bundle (when it is there), after checking it lists the same tokens."""
    key = key_path_for(report.path)
    if not key.is_file():
        report.notes.append(f"no key beside the bundle ({key.name})")
        return set()
    try:
        with zipfile.ZipFile(key) as zf:
            rows = json.loads(zf.read("condition_key.json"))["stimuli"]
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile, zlib.error) as exc:
        report.problems.append(f"{key.name}: the key beside the bundle is unreadable ({exc})")
        return set()
    key_tokens = {str(r.get("token")) for r in rows}
    if key_tokens != tokens:
        report.problems.append(f"{key.name}: the key lists {len(key_tokens)} token(s), the manifest {len(tokens)}, "
                               f"and they differ ({len(key_tokens ^ tokens)} not in both)")
    report.notes.append(f"the key beside the bundle ({key.name}) covers the same tokens")
    return _names_of(rows)


def _check_blinding(names, tokens, forbidden: set[str], report: VerifyReport) -> None:
    forbidden = {n for n in forbidden if n and len(n) >= MIN_NAME_LENGTH}
    report.names_checked = len(forbidden)
    allowed = {"README.txt", "manifest.csv", "manifest.json", "mturk_batch.csv", CHECKSUMS}
    allowed |= {video_name(t) for t in tokens}
    for name in sorted(names):
        if name not in allowed:
            report.problems.append(f"{name}: a blind bundle holds only its fixed files and stimuli/<token>.mp4")
        hits = sorted(n for n in forbidden if n in name)
        if hits:
            report.problems.append(f"{name}: the file name contains {', '.join(hits)} (blinding)")
    for token in sorted(tokens):
        if not TOKEN_RE.match(token):
            report.problems.append(f"manifest token {token!r} is not an opaque token")


def _check_key(zf, names, report: VerifyReport) -> None:
    key = _read_json(zf, "condition_key.json", report)
    if not isinstance(key, dict) or not isinstance(key.get("stimuli"), list):
        if key is not None:
            report.problems.append("condition_key.json has no list of stimuli")
        return
    report.study, report.version = str(key.get("study", "")), key.get("version")
    for name in KEY_FILES:
        if name not in names:
            report.problems.append(f"{name} is missing")
