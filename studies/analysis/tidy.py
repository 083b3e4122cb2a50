"""Reading rating data into the tidy frame every analysis function takes: one row per rating.

`load_csv` reads four kinds of file and `normalise` checks a frame against the chosen design:

- "platform": this platform's own export (`manage.py export_responses`, the dashboard's CSV button); its
  header is `PLATFORM_COLUMNS` (studies/analysis/columns.py, also `studies.selectors.EXPORT_COLUMNS`).
  Older exports without the `check`, `expected`, `scale_min` and `scale_max` columns are read too
  (attention trials then become checks from `trial_kind`; catch trials cannot be recognised).
- "tidy": any CSV with the required columns of a design: `participant, condition, value` (likert, slider,
  MUSHRA) or `participant, pair_a, pair_b, choice` (A/B preference); the optional columns of `COLUMNS` are
  used when present.
- "webmushra": the `mushra.csv` results file written by webMUSHRA's `service/write.php`
  (github.com/audiolabs/webMUSHRA): `session_test_id, <one column per questionnaire field>, [session_uuid,]
  trial_id, rating_stimulus, rating_score, rating_time, rating_comment`, one row per slider. `session_uuid`
  exists since webMUSHRA 1.4 and is the participant; without it a questionnaire field that names the person
  (`uuid`, `email`, ...) is used, and failing that the sessions are told apart by order: write.php appends
  each session's rows in one block, so a block ends where a (trial, stimulus) pair repeats. Reports list
  participant ids, so an id taken from an email field is a pseudonym ("email-" + 12 hex digits of its
  SHA-256) and email columns are not carried into the frame.
  Stimulus "reference" is the hidden reference; "anchor35", "anchor70" (any name starting "anchor") are
  anchors. utterance = trial_id (a trial is one stimulus material: its conditions are compared within it and
  the analysis pools the trials, with a per-trial breakdown), item = "", question = "mushra", scale 0..100, answer_ms = rating_time (webMUSHRA's time on
  the page, the same for every slider of it). Its `paired_comparison.csv` records whether the listener found
  the reference ("correct"/"incorrect"), not a preference, and is refused with that explanation.
- "hemvip": HEMVIP, the GENEA Challenge's fork of webMUSHRA for video (github.com/jonepatr/hemvip). HEMVIP
  itself writes no CSV: `/save` stores webMUSHRA's session JSON in MongoDB and `tools/export_data.py`
  dumps it as JSON. What we read is that JSON flattened to webMUSHRA's mushra shape (one row per slider):
  `session_test_id, trial_id, rating_stimulus, rating_score, rating_time`, with the participant as
  `userId`/`user_id`/`prolific_pid` (HEMVIP keys sessions by the Prolific id) and optionally `trial_type`
  (`video` = rating page with 0..100 sliders, `videopc` = pairwise page). HEMVIP gives every page of a
  participant's list the same page id, so pages are told apart by order: a page ends where the trial id or
  rating_time (the time on the page, the same on all its rows) changes, or, without rating_time, where a
  stimulus name repeats; utterance = "<trial_id>#<page>" when ids repeat, and the stimulus (which video) is
  unknown. Attention checks are the stimulus "at" (rating page; the number asked for is in
  the page config, not the results: read from an `expected` column if there is one, else left empty, and
  HEMVIP already ended the session of anyone who missed it by more than 3) or a name containing "attn"
  (pairwise page, e.g. `attn_check_<n>`; passed by pressing "report", stored as score 99). A `videopc` page gives
  two rows, left then right, scores true/false: true on the left = choice A, on the right = B, both false =
  tie. Detected as HEMVIP (rather than webMUSHRA) when it has a HEMVIP participant column, a `trial_type`
  of video/videopc, an "at"/"attn..." stimulus, or no `rating_comment` column (write.php always writes
  one); otherwise pass fmt="hemvip".

Nothing here touches Django: the same functions read data collected elsewhere (`manage.py analyze`).
"""
from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd

from .columns import PLATFORM_COLUMNS  # noqa: F401  (this module names the formats it reads)
from .errors import AnalysisError

COLUMNS = [
    "participant", "condition", "value", "pair_a", "pair_b", "choice", "question", "question_type", "item",
    "stimulus", "utterance", "embodiment", "trial_kind", "check", "expected", "role", "answer_ms",
    "watched_fraction", "scale_min", "scale_max", "trial_position", "excluded", "exclusion_rules",
]

DESIGNS = ("within", "between", "pairwise", "mushra")
RATING_DESIGNS = ("within", "between", "mushra")
FORMATS = ("platform", "tidy", "webmushra", "hemvip")
REQUIRED = {"rating": ["participant", "condition", "value"], "pairwise": ["participant", "pair_a", "pair_b", "choice"]}

_PLATFORM_SIGNATURE = {"participant", "source", "status", "excluded", "exclusion_rules", "cell", "trial_kind",
                       "question_type", "slot"}
_MUSHRA_CORE = {"session_test_id", "trial_id", "rating_stimulus", "rating_score"}
_PC_CORE = {"session_test_id", "trial_id", "choice_reference", "choice_non_reference", "choice_answer"}
_HEMVIP_ID = ("userid", "user_id", "prolific_pid")
_WEBMUSHRA_ID = ("session_uuid", "uuid", "participant_uuid", "participant_id", "participant", "email",
                 "participant_email")
_EMAIL = ("email", "participant_email", "e-mail", "mail")

QUESTION_TYPES = ("likert", "slider", "pairwise")
TRIAL_KINDS = ("rated", "training", "attention")
CHECKS = ("", "attention", "catch")
ROLES = ("test", "reference", "hidden_reference", "anchor")
_TEXT_DEFAULTS = {
    "participant": "", "condition": "", "pair_a": "", "pair_b": "", "choice": "", "question": "rating",
    "question_type": "", "item": "", "stimulus": "", "utterance": "", "embodiment": "", "trial_kind": "rated",
    "check": "", "role": "test", "exclusion_rules": "",
}
_NUMBERS = ("value", "expected", "answer_ms", "watched_fraction", "scale_min", "scale_max")
_MISSING = {"", "na", "nan", "n/a", "null", "none", "-"}


# --- reading files ----------------------------------------------------------------------------------------


def _read_text(path) -> tuple[str, str]:
    """The file's text and its delimiter; AnalysisError for a missing, empty or binary file."""
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"no file at {path}: check the path")
    raw = path.read_bytes()
    if not raw.strip():
        raise AnalysisError(f"{path.name} is empty: export the results again")
    if raw.startswith(b"PK\x03\x04"):
        raise AnalysisError(f"{path.name} is an Excel workbook or zip archive, not a CSV: open it and save it as "
                            "'CSV UTF-8', or download the CSV export instead")
    if b"\x00" in raw[:65536]:
        raise AnalysisError(f"{path.name} is a binary file, not a CSV text file: export the results as CSV")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")  # spreadsheet exports on Windows
    first = text.lstrip("\r\n").splitlines()[0]
    counts = {d: first.count(d) for d in (",", ";", "\t")}
    delimiter = max(counts, key=counts.get) if max(counts.values()) else ","
    return text, delimiter


def _header(text: str, delimiter: str) -> list[str]:
    row = next(csv.reader(io.StringIO(text.lstrip("\r\n")), delimiter=delimiter))
    return [c.strip() for c in row]


def _looks_hemvip(columns: list[str], frame: pd.DataFrame | None) -> bool:
    lower = {c.lower() for c in columns}
    if lower & set(_HEMVIP_ID) or "rating_comment" not in lower:
        return True
    if frame is None:
        return False
    by_lower = {c.lower(): c for c in frame.columns}
    page_types = frame[by_lower["trial_type"]].str.strip().str.lower() if "trial_type" in by_lower else None
    if page_types is not None and page_types.isin(["video", "videopc"]).any():
        return True
    names = frame[by_lower["rating_stimulus"]].str.strip().str.lower()
    return bool((names.eq("at") | names.str.contains("attn", regex=False)).any())


def _classify(name: str, columns: list[str], frame: pd.DataFrame | None) -> str:
    cols, lower = set(columns), {c.lower() for c in columns}
    if _PLATFORM_SIGNATURE <= cols:
        return "platform"
    if _MUSHRA_CORE <= lower:
        return "hemvip" if _looks_hemvip(columns, frame) else "webmushra"
    if _PC_CORE <= lower:
        return "webmushra"
    if "participant" in cols and ({"condition", "value"} <= cols or {"pair_a", "pair_b", "choice"} <= cols):
        return "tidy"
    shown = ", ".join(columns[:15]) + (", ..." if len(columns) > 15 else "")
    raise AnalysisError(
        f"{name}: its columns ({shown}) match none of the formats read here. A tidy CSV needs participant, "
        "condition, value (ratings) or participant, pair_a, pair_b, choice (A/B choices); webMUSHRA/HEMVIP "
        "files need session_test_id, trial_id, rating_stimulus, rating_score; the platform's own export is "
        "read as it is. Rename the columns or export the file again."
    )


def _read_frame(path, text: str, delimiter: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False,
                            skip_blank_lines=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error) as exc:
        raise AnalysisError(f"{Path(path).name} is not a well-formed CSV: {exc}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise AnalysisError(f"{Path(path).name} has a header but no data rows: export the results again "
                            "after participants have answered")
    dupes = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    if dupes:
        raise AnalysisError(f"{Path(path).name} has the column(s) {', '.join(dupes)} more than once: keep one")
    return frame


def detect_format(path) -> str:
    """Which of FORMATS the CSV at `path` is, from its header (and, to tell HEMVIP from webMUSHRA, its rows)."""
    text, delimiter = _read_text(path)
    columns = _header(text, delimiter)
    frame = _read_frame(path, text, delimiter) if _MUSHRA_CORE <= {c.lower() for c in columns} else None
    return _classify(Path(path).name, columns, frame)


def load_csv(path, *, fmt: str | None = None) -> tuple[pd.DataFrame, str]:
    """Read a results CSV into the tidy frame (columns `COLUMNS` first, then any others the file has).

    The frame is standardised for every design (types coerced, defaults filled); `normalise(df,
    design=...)` then checks it against the chosen design and removes (and reports) unusable rows.
    Returns (frame, format); `fmt` forces a format instead of detecting it.
    """
    if fmt is not None and fmt not in FORMATS:
        raise AnalysisError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)} (or leave it out to detect it)")
    name = Path(path).name
    text, delimiter = _read_text(path)
    frame = _read_frame(path, text, delimiter)
    detected = _classify(name, list(frame.columns), frame)
    fmt = fmt or detected
    if fmt == "platform" and not _PLATFORM_SIGNATURE <= set(frame.columns):
        missing = sorted(_PLATFORM_SIGNATURE - set(frame.columns))
        raise AnalysisError(f"{name} is not the platform's export: it lacks {', '.join(missing)}")
    if fmt in ("webmushra", "hemvip"):
        frame = _from_mushra(name, frame, fmt)
    elif fmt == "tidy" and not (set(REQUIRED["rating"]) <= set(frame.columns)
                                or set(REQUIRED["pairwise"]) <= set(frame.columns)):
        raise AnalysisError(f"{name} is not a tidy CSV: it needs participant, condition, value (ratings) or "
                            "participant, pair_a, pair_b, choice (A/B choices)")
    attrs = dict(frame.attrs)
    frame = _standardise(frame)
    frame.attrs = {**attrs, "format": fmt, "source": name}
    return frame, fmt


# --- webMUSHRA and HEMVIP -------------------------------------------------------------------------------


def _blocks(groups: np.ndarray, trials: np.ndarray, keys: np.ndarray, *, split_on_repeat: bool) -> np.ndarray:
    """Number the consecutive blocks of rows within each group: a new block starts where the trial changes
    or (split_on_repeat) where a key repeats within the current block. Files are read once, so a plain loop
    over rows is fine here."""
    out = np.empty(len(keys), dtype=np.int64)
    block, seen, last_group, last_trial = -1, set(), object(), object()
    for i, (g, t, k) in enumerate(zip(groups, trials, keys)):
        if g != last_group:
            block, seen = 0, set()
        elif t != last_trial or (split_on_repeat and k in seen):
            block, seen = block + 1, set()
        seen.add(k)
        out[i], last_group, last_trial = block, g, t
    return out


def _participant_ids(name: str, frame: pd.DataFrame, by_lower: dict, fmt: str) -> pd.Series:
    order = _HEMVIP_ID + _WEBMUSHRA_ID if fmt == "hemvip" else _WEBMUSHRA_ID + _HEMVIP_ID
    for key in order:
        col = by_lower.get(key)
        if col is not None and frame[col].str.strip().ne("").all():
            ids = frame[col].str.strip()
            if key in _EMAIL:  # reports list participant ids: never an address, a stable pseudonym instead
                ids = ids.map(lambda e: "email-" + hashlib.sha256(e.lower().encode()).hexdigest()[:12])
            return ids
    test_id = frame[by_lower["session_test_id"]].str.strip()
    key = frame[by_lower["trial_id"]].str.strip() + "\x1f" + frame[by_lower["rating_stimulus"]].str.strip()
    if not key.groupby(test_id).apply(lambda k: k.duplicated().any()).any():
        return test_id
    # No per-session id (webMUSHRA before 1.4): write.php appends one session's rows as one block.
    session = _blocks(test_id.to_numpy(), np.zeros(len(key)), key.to_numpy(), split_on_repeat=True)
    return test_id + ":session" + pd.Series(session + 1, index=frame.index).astype(str)


def _from_mushra(name: str, frame: pd.DataFrame, fmt: str) -> pd.DataFrame:
    """webMUSHRA's mushra.csv (or HEMVIP's flattened results) as tidy rows."""
    by_lower = {c.lower(): c for c in frame.columns}
    if not _MUSHRA_CORE <= set(by_lower):
        if _PC_CORE <= set(by_lower):
            raise AnalysisError(
                f"{name} is webMUSHRA's paired_comparison.csv: it records whether the listener found the "
                "reference (choice_answer correct/incorrect), not which of two systems they preferred, so it "
                "cannot be analysed as A/B preferences. Analyse webMUSHRA's mushra.csv instead.")
        missing = sorted(_MUSHRA_CORE - set(by_lower))
        raise AnalysisError(f"{name} is not a webMUSHRA/HEMVIP results file: it lacks {', '.join(missing)}")
    text = {key: frame[col].str.strip() for key, col in by_lower.items()}
    participant = _participant_ids(name, frame, by_lower, fmt)
    trial_id, stim = text["trial_id"], text["rating_stimulus"]
    lower = stim.str.lower()
    default_question = "video" if fmt == "hemvip" else "mushra"
    question = text["trial_type"].replace("", default_question) if "trial_type" in text else pd.Series(
        default_question, index=frame.index)
    score = text["rating_score"]
    score_lower = score.str.lower()
    # Pages: HEMVIP reuses one page id for a participant's whole list. rating_time is the time spent on the
    # page, the same on each of its rows, so a page ends where the trial id or the time changes (without
    # times: where the trial id changes or a stimulus name repeats).
    timed = "rating_time" in text
    page_key = trial_id + "\x1f" + text["rating_time"] if timed else trial_id
    page = _blocks(participant.to_numpy(), page_key.to_numpy(), stim.to_numpy(), split_on_repeat=not timed)
    page = pd.Series(page + 1, index=frame.index)
    # A pairwise page (HEMVIP videopc): said by trial_type, or its scores are true/false (99 = reported).
    pairwise = question.str.lower().eq("videopc") | score_lower.isin(["true", "false"])
    pairwise = pairwise.groupby([participant, page]).transform("any").astype(bool)
    pages_per_trial = pd.DataFrame({"p": participant, "t": trial_id, "g": page}).groupby(["p", "t"])["g"].nunique()
    ids_repeat = bool((pages_per_trial > 1).any())
    material = trial_id + "#" + page.astype(str) if ids_repeat else trial_id
    attention_name = (lower.eq("at") | lower.str.contains("attn", regex=False)) & (fmt == "hemvip")
    role = np.where(lower.eq("reference"), "hidden_reference",
                    np.where(lower.str.startswith("anchor"), "anchor", "test"))
    expected_text = text.get("expected", pd.Series("", index=frame.index))
    expected = pd.to_numeric(expected_text.where(expected_text.ne("")), errors="coerce")
    from_name = pd.to_numeric(stim.str.extract(r"attn_check_(\d+)", expand=False), errors="coerce")
    rows = pd.DataFrame({
        "participant": participant,
        "condition": stim,
        "value": score,
        "question": question,
        "question_type": "slider",
        "item": "",
        "utterance": material,
        "stimulus": "" if ids_repeat else trial_id + "/" + stim,
        "trial_kind": np.where(attention_name, "attention", "rated"),
        "check": np.where(attention_name, "attention", ""),
        "expected": expected.where(expected.notna(), from_name),
        "role": role,
        "answer_ms": text.get("rating_time", pd.Series("", index=frame.index)),
        "scale_min": 0.0,
        "scale_max": 100.0,
        "trial_position": page,
    }, index=frame.index)
    # Questionnaire answers ride along (email addresses do not); a name that clashes with a tidy column gets
    # a "q_" prefix.
    used = set(_MUSHRA_CORE) | {"rating_time", "rating_comment", "trial_type", "expected"} | set(_EMAIL)
    for col in frame.columns:
        if col.lower() not in used:
            rows[f"q_{col}" if col in COLUMNS or col in rows.columns else col] = frame[col]
    if pairwise.any():
        rows = pd.concat([rows[~pairwise], _pairs(name, rows[pairwise], score_lower[pairwise])])
        rows = rows.sort_index(kind="stable")
    return rows.reset_index(drop=True)


def _pairs(name: str, rows: pd.DataFrame, score: pd.Series) -> pd.DataFrame:
    """HEMVIP `videopc` pages (two rows, left then right; true = chosen) as one A/B row each."""
    groups = rows.groupby(["participant", "trial_position"], sort=False)
    sizes = groups.size()
    if (sizes != 2).any():
        (p, page), n = next((k, v) for k, v in sizes.items() if v != 2)
        raise AnalysisError(f"{name}: pairwise page {page} of participant {p} has {n} rows; a HEMVIP videopc page "
                            "has exactly two (left, then right)")
    first = groups.cumcount().eq(0).to_numpy()
    left, right = rows[first], rows[~first]
    s_left, s_right = score[first].to_numpy(), score[~first].to_numpy()
    reported = (s_left == "99") | (s_right == "99")
    choice = np.where(s_left == "true", "A", np.where(s_right == "true", "B", "tie"))
    attention = left["trial_kind"].eq("attention").to_numpy() | right["trial_kind"].eq("attention").to_numpy()
    out = left.copy()
    out["pair_a"] = left["condition"].to_numpy()
    out["pair_b"] = right["condition"].to_numpy()
    out["choice"] = np.where(reported, "", choice)
    out["condition"] = np.where(choice == "A", out["pair_a"], np.where(choice == "B", out["pair_b"], ""))
    out["question_type"] = "pairwise"
    out["scale_min"] = np.nan
    out["scale_max"] = np.nan
    out["role"] = "test"
    # The attention check of a pairwise page is passed by pressing "report" (score 99).
    out["trial_kind"] = np.where(attention, "attention", "rated")
    out["check"] = np.where(attention, "attention", "")
    out["expected"] = np.where(attention, 99.0, np.nan)
    out["value"] = np.where(reported, "99", np.where(attention, "0", ""))
    out["stimulus"] = ""
    return out


# --- standardising and checking ---------------------------------------------------------------------------


def _to_float(series: pd.Series, column: str) -> pd.Series:
    """Numbers from a column; empty/NA markers become NaN; other text is an error that names the rows."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.astype(float)
    text = series.astype("string").str.strip()
    missing = text.isna() | text.str.lower().isin(_MISSING)
    numbers = pd.to_numeric(text.where(~missing), errors="coerce")
    bad = numbers.isna() & ~missing
    if bad.any():
        examples = ", ".join(repr(v) for v in text[bad].unique()[:3])
        rows = np.flatnonzero(bad.to_numpy())[:3] + 2  # +2: the header is line 1
        raise AnalysisError(f"column {column} holds text that is not a number ({examples}; {int(bad.sum())} row(s), "
                            f"first on line(s) {', '.join(map(str, rows))} of a CSV): fix or empty those cells")
    return numbers.astype(float)


def _text(series: pd.Series, default: str, *, lower: bool = False) -> pd.Series:
    """Stripped text (optionally lower-case), missing or empty cells set to `default`. Cleans each distinct
    value once, so 100,000 rows with a few hundred distinct values cost next to nothing."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    cleaned = []
    for value in uniques:
        text = str(value).strip()
        cleaned.append((text.lower() if lower else text) or default)
    cleaned.append(default)  # code -1: missing
    return pd.Series(np.array(cleaned, dtype=object)[codes], index=series.index, dtype=object)


def _check_values(frame: pd.DataFrame, column: str, allowed: tuple) -> None:
    bad = ~frame[column].isin(allowed)
    if bad.any():
        values = ", ".join(repr(v) for v in frame.loc[bad, column].unique()[:5])
        raise AnalysisError(f"column {column} has value(s) {values}; allowed: {', '.join(repr(a) for a in allowed)}")


def _standardise(df: pd.DataFrame, design: str | None = None) -> pd.DataFrame:
    """Types coerced and defaults filled, for any design; no row is removed. Idempotent."""
    out = df.copy()
    out.columns = [str(c).strip() for c in out.columns]
    n = len(out)
    for column, default in _TEXT_DEFAULTS.items():
        lower = column in ("trial_kind", "check", "role", "question_type")
        out[column] = _text(out[column], default, lower=lower) if column in out.columns else default
    _check_values(out, "trial_kind", TRIAL_KINDS)
    _check_values(out, "check", CHECKS)
    _check_values(out, "role", ROLES)
    # An attention trial is a check even in files that predate the `check` column.
    out.loc[out["trial_kind"].eq("attention") & out["check"].eq(""), "check"] = "attention"
    choice = _text(out["choice"], "", lower=True)
    out["choice"] = out["choice"].mask(choice.eq("a"), "A").mask(choice.eq("b"), "B").mask(choice.eq("tie"), "tie")
    for column in _NUMBERS:
        out[column] = _to_float(out[column], column) if column in out.columns else np.full(n, np.nan)
    _fill_question_type(out, design)
    _check_values(out, "question_type", QUESTION_TYPES)
    _fill_scale(out)
    if "trial_position" in out.columns:
        position = _to_float(out["trial_position"], "trial_position")
    else:
        position = pd.Series(np.nan, index=out.index)
    if position.isna().any():  # missing: the order of the participant's rows in the file
        order = out.groupby("participant", sort=False).cumcount() + 1
        position = position.fillna(order.astype(float))
    out["trial_position"] = position.round().astype(np.int64)
    if "excluded" in out.columns:
        flag = out["excluded"]
        if not pd.api.types.is_numeric_dtype(flag):
            flag = flag.astype("string").str.strip().str.lower().replace({"true": "1", "false": "0"})
        out["excluded"] = _to_float(flag, "excluded").fillna(0).ne(0).astype(np.int64)
    else:
        out["excluded"] = np.zeros(n, dtype=np.int64)
    for column in _TEXT_DEFAULTS:  # one text dtype whatever pandas made of the defaults (pandas 3: "str")
        out[column] = out[column].astype(object)
    rest = [c for c in out.columns if c not in COLUMNS]
    return out[COLUMNS + rest]


def _fill_question_type(out: pd.DataFrame, design: str | None) -> None:
    """Missing question types: a row with both sides of a pair is pairwise; otherwise per question, whole
    numbers within 1..11 are likert and anything else a slider (a mushra design is always a slider)."""
    empty = out["question_type"].eq("")
    if not empty.any():
        return
    paired = empty & out["pair_a"].ne("") & out["pair_b"].ne("")
    out.loc[paired, "question_type"] = "pairwise"
    rest = empty & ~paired
    if design == "pairwise":
        out.loc[rest & out["value"].isna(), "question_type"] = "pairwise"
        rest = rest & out["value"].notna()
    if design == "mushra":
        out.loc[rest, "question_type"] = "slider"
        return
    values = out.loc[rest, "value"]
    whole = values.isna() | ((values == values.round()) & values.between(1, 11))
    whole = whole.groupby(out.loc[rest, "question"]).all()
    kind = whole.map({True: "likert", False: "slider"})
    out.loc[rest, "question_type"] = out.loc[rest, "question"].map(kind).to_numpy()


def _fill_scale(out: pd.DataFrame) -> None:
    """Missing scale ends: likert 1..the highest value given to that question, slider 0..100."""
    likert, slider = out["question_type"].eq("likert"), out["question_type"].eq("slider")
    top = out.loc[likert].groupby("question")["value"].max()
    low = pd.Series(np.where(likert, 1.0, np.where(slider, 0.0, np.nan)), index=out.index)
    high = out["question"].map(top).astype(float).where(likert).fillna(pd.Series(np.where(slider, 100.0, np.nan),
                                                                                  index=out.index))
    out["scale_min"] = out["scale_min"].fillna(low)
    out["scale_max"] = out["scale_max"].fillna(high)


def normalise(df: pd.DataFrame, *, design: str) -> pd.DataFrame:
    """Check `df` against `design`, coerce types, fill optional columns with their defaults.

    Rows the design cannot use are removed, never silently: each reason and its row count is appended to
    `frame.attrs["dropped"]` ([{"reason", "rows"}]). Rating designs (within, between, mushra) drop rows
    without a value, without a participant or condition, and pairwise answers; the pairwise design drops
    rating answers (checks stay: attention checks are shown with a likert question) and choices that are not
    A, B or tie. Calling it again on its own output changes nothing.
    """
    if design not in DESIGNS:
        raise AnalysisError(f"unknown design {design!r}: use one of {', '.join(DESIGNS)}")
    if not isinstance(df, pd.DataFrame):
        raise AnalysisError("the data must be a table (pandas DataFrame) with one row per rating")
    columns = [str(c).strip() for c in df.columns]
    required = REQUIRED["pairwise" if design == "pairwise" else "rating"]
    missing = [c for c in required if c not in columns]
    if missing:
        shown = ", ".join(columns[:15]) + (", ..." if len(columns) > 15 else "")
        other = ("participant, condition, value for a rating design" if design == "pairwise"
                 else "participant, pair_a, pair_b, choice for the pairwise design")
        raise AnalysisError(
            f"a {design} analysis needs the columns {', '.join(required)}; missing: {', '.join(missing)} "
            f"(the data have: {shown or 'no columns'}). Rename the columns, or choose the design that fits the "
            f"data ({other})."
        )
    out = _standardise(df, design)
    dropped = [dict(d) for d in df.attrs.get("dropped", [])]

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal out
        count = int(mask.sum())
        if count:
            dropped.append({"reason": reason, "rows": count})
            out = out[~mask.to_numpy()]

    drop(out["participant"].eq(""), "no participant id")
    if design in RATING_DESIGNS:
        pair = out["question_type"].eq("pairwise")
        if pair.any():
            names = ", ".join(sorted(out.loc[pair, "question"].unique())[:5])
            drop(pair, f"pairwise answers (question {names}) are not part of a {design} analysis")
        drop(out["value"].isna(), "no rating value (empty or NA)")
        scored = out["trial_kind"].eq("rated") & out["check"].eq("")
        drop(scored & out["condition"].eq(""), "rated row without a condition")
    else:
        rating = (out["check"].eq("") & out["trial_kind"].ne("attention")
                  & out["question_type"].isin(["likert", "slider"]))
        if rating.any():
            names = ", ".join(sorted(out.loc[rating, "question"].unique())[:5])
            drop(rating, f"rating answers (question {names}) are not part of a pairwise analysis")
        pair = out["question_type"].eq("pairwise")
        drop(pair & (out["pair_a"].eq("") | out["pair_b"].eq("")), "pair_a or pair_b is empty")
        pair = out["question_type"].eq("pairwise")
        drop(pair & ~out["choice"].isin(["A", "B", "tie"]) & ~out["check"].eq("attention"),
             "choice is not A, B or tie")
    out = out.reset_index(drop=True)
    out.attrs = {**{k: v for k, v in df.attrs.items() if k != "dropped"}, "dropped": dropped, "design": design}
    return out
