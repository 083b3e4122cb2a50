"""The report writer: turns the summary dict of docs/report-schema.md into the files a researcher publishes
with a paper — `summary.json`, `tables/*.csv`, a standalone `index.html` and `report.pdf`.

The page and the PDF are laid out from one document model (`_document`): sections holding paragraphs,
tables of already formatted cells, figures and definition lists. The template
`studies/report.html` and `_pdf_bytes` only place that model, so both media show the same numbers,
formatted the same way, and nothing that is not in summary.json.

Formatting follows APA style: p-values "p = .012" and "p < .001" (`format_p`), means, SDs, test
statistics and effect sizes with two decimals, intervals "[lo, hi]" (`format_ci`). A number that is missing
is "—"; where the summary says why (a `note`), the page shows the note as the cell's tooltip and both
media print it below the table, so a reader of the paper copy sees it too.

PDF layout: tables are as wide as their content (numbers never wrap; text wraps at words when a table
would not fit the page), and figures keep their own print size from the PNG's resolution, shrunk to the
frame when larger, so their lettering matches the text rather than being blown up.

Same bytes every time: summary.json has sorted keys, the PDF is written in reportlab's invariant mode with
no creation or modification date, and nothing depends on the clock, the machine or the output folder.
Every file is rendered in memory first and then written under a temporary name in its folder and renamed,
so a failed or retried task never leaves half a report.
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import io
import json
import math
import os
import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath, PurePosixPath
from xml.sax.saxutils import escape as xml_escape

import numpy as np

SCHEMA = "evalsite.report/1"
MISSING = "—"

# Columns of the CSV tables (docs/report-schema.md, "Tables"); the header is written even when empty.
SUMMARY_COLUMNS = ("condition", "n_ratings", "n_participants", "mean", "median", "sd",
                   "ci_boot_low", "ci_boot_high", "ci_t_low", "ci_t_high")
BLOCK_KEY = ("block", "question", "item", "embodiment")
PAIRWISE_COLUMNS = ("a", "b", "test", "n", "n_a", "n_b", "statistic", "p", "p_adj", "significant", "mean_a",
                    "mean_b", "direction", "rank_biserial", "cliffs_delta", "cohens_d", "note")
OMNIBUS_COLUMNS = ("design", "test", "statistic", "df", "p", "n_participants", "note")
FIXED_EFFECT_COLUMNS = ("term", "estimate", "se", "z", "p", "ci_low", "ci_high", "converged")
TABLES = {
    "summary.csv": BLOCK_KEY + SUMMARY_COLUMNS,
    "pairwise.csv": BLOCK_KEY + PAIRWISE_COLUMNS,
    "omnibus.csv": BLOCK_KEY + OMNIBUS_COLUMNS,
    "items.csv": ("question", "embodiment", "item") + SUMMARY_COLUMNS,
    "win_rates.csv": ("block", "question", "embodiment", "condition", "wins", "losses", "ties", "n", "win_rate"),
    "bradley_terry.csv": ("block", "question", "embodiment", "condition", "score", "ci_low", "ci_high"),
    "exclusions.csv": ("participant", "rule", "reason"),
    "mixed_model.csv": BLOCK_KEY + FIXED_EFFECT_COLUMNS,
}

_OMNIBUS_NAMES = {  # test → (name, statistic symbol, has degrees of freedom)
    "friedman": ("Friedman", "χ²", True),
    "kruskal": ("Kruskal–Wallis", "H", True),
    "wilcoxon": ("Wilcoxon signed-rank", "W", False),
    "mannwhitney": ("Mann–Whitney", "U", False),
}
_TEST_NAMES = {"wilcoxon": "Wilcoxon", "mannwhitney": "Mann–Whitney"}
_CORRECTIONS = {"holm": "Holm", "bonferroni": "Bonferroni", "bh": "Benjamini–Hochberg", "none": "no correction"}
_DESIGNS = {"within": "within participants", "between": "between participants",
            "mushra": "MUSHRA (within participants)", "pairwise": "pairwise preference",
            "per-question": "per question (each question's own design)"}
_FIGURES = {"significance_matrix": "Significance matrix", "box_violin": "Ratings per condition (violin and box)",
            "likert_stacked": "Likert answers per condition", "per_item": "Mean rating per item",
            "bradley_terry": "Bradley–Terry scores", "power_curve": "Power curve"}
_METHODS = {"unit": "Unit of analysis", "ci_bootstrap": "Bootstrap interval", "ci_t": "t interval",
            "friedman": "Friedman test", "kruskal": "Kruskal–Wallis test", "wilcoxon": "Wilcoxon signed-rank test",
            "mannwhitney": "Mann–Whitney U test", "correction": "Multiple comparisons",
            "rank_biserial": "Rank-biserial correlation", "cliffs_delta": "Cliff's δ", "cohens_d": "Cohen's d",
            "bradley_terry": "Bradley–Terry model", "binomial": "Binomial test", "mixed_model": "Mixed model",
            "krippendorff": "Krippendorff's α"}
_SETTINGS = {"alpha": "Significance level α", "correction": "Multiple-comparison correction",
             "zero_method": "Zero differences (Wilcoxon)", "n_boot": "Bootstrap rounds (intervals)",
             "bt_boot": "Bootstrap rounds (Bradley–Terry)", "ci_level": "Confidence level", "seed": "Random seed",
             "rules": "Exclusion thresholds", "matched": "Matched condition", "mismatched": "Mismatched conditions",
             "power": "Power planning"}


# ---------------------------------------------------------------------------------------------- formatting

def _number(value) -> float | None:
    """`value` as a finite float, or None for None, NaN, ±inf, bools and anything that is not a number."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def format_p(p, *, prefix: bool = True) -> str:
    """APA-style p-value: "p = .012", "p < .001", "p > .999"; "—" when missing.

    `prefix=False` leaves out the "p " (".012", "< .001") for a table column headed p."""
    value = _number(p)
    if value is None:
        return MISSING
    if value < 0.001:
        op, digits = "<", ".001"
    elif value >= 0.9995:  # would round to 1.000
        op, digits = ">", ".999"
    else:
        op, digits = "=", f"{value:.3f}"[1:]
    if prefix:
        return f"p {op} {digits}"
    return digits if op == "=" else f"{op} {digits}"


def format_ci(lo, hi, *, digits: int = 2) -> str:
    """Confidence interval "[lo, hi]" with `digits` decimals; "—" when either end is missing."""
    low, high = _number(lo), _number(hi)
    if low is None or high is None:
        return MISSING
    return f"[{_fixed(low, digits)}, {_fixed(high, digits)}]"


def _fixed(value: float, digits: int) -> str:
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.00"


def _dec(value, digits: int = 2) -> str:
    """A measured number (mean, SD, statistic, effect size) with a fixed number of decimals."""
    number = _number(value)
    return MISSING if number is None else _fixed(number, digits)


def _count(value) -> str:
    """A count or degrees of freedom: whole numbers without decimals, others with two."""
    number = _number(value)
    if number is None:
        return MISSING
    return str(int(number)) if number.is_integer() else _fixed(number, 2)


def _general(value) -> str:
    """An objective metric of any magnitude: four significant digits."""
    number = _number(value)
    return MISSING if number is None else f"{number:.4g}"


def _level(settings: Mapping) -> str:
    """The confidence level as "95%"."""
    level = _number(settings.get("ci_level"))
    return f"{level * 100:g}%" if level is not None else "95%"


def _text(value) -> str:
    """A setting or name for display: lists joined, mappings as "k = v", None as "—"."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else MISSING
    if isinstance(value, Mapping):
        return "; ".join(f"{k} = {_text(v)}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))) or "defaults"
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value) or MISSING
    return str(value)


def _name(value) -> str:
    """A condition, rule or other name; "—" when missing (0 is a name, not a missing one)."""
    return MISSING if value is None or value == "" else str(value)


def _yes_no(value) -> str:
    return MISSING if value is None else ("yes" if value else "no")


def _label(key, names: Mapping[str, str]) -> str:
    return names.get(str(key)) or str(key).replace("_", " ").capitalize()


def _dict(value) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def _list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else []


def _rows(value) -> list[Mapping]:
    return [row for row in _list(value) if isinstance(row, Mapping)]


# ------------------------------------------------------------------------------------------ JSON-safe copy

def _clean(value):
    """JSON-safe copy of the summary: numpy scalars and arrays to Python, NaN and ±inf (and pandas' NA and
    NaT) to None, tuples to lists, paths to POSIX strings, dates to ISO 8601."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, PurePath):
        return value.as_posix()
    if type(value).__name__ in ("NAType", "NaTType"):  # pandas' missing values, without importing pandas
        return None
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return value


def _summary_json(summary: Mapping) -> str:
    return json.dumps(summary, sort_keys=True, indent=1, allow_nan=False, ensure_ascii=False) + "\n"


# ----------------------------------------------------------------------------------------------- CSV tables

def _csv_tables(summary: Mapping) -> dict[str, str]:
    """File name → CSV text, for every table in `TABLES` (header only when there are no rows)."""
    rows: dict[str, list[list]] = {name: [] for name in TABLES}
    for block in _rows(summary.get("blocks")):
        key = [block.get("id"), block.get("question"), block.get("item"), block.get("embodiment")]
        for row in _rows(block.get("summary")):
            rows["summary.csv"].append(key + [row.get(c) for c in SUMMARY_COLUMNS])
        for row in _rows(block.get("pairwise")):
            rows["pairwise.csv"].append(key + [row.get(c) for c in PAIRWISE_COLUMNS])
        omnibus = block.get("omnibus")
        if isinstance(omnibus, Mapping):
            rows["omnibus.csv"].append(key + [block.get("design")] + [omnibus.get(c) for c in OMNIBUS_COLUMNS[1:]])
        model = _dict(block.get("mixed_model"))
        for row in _rows(model.get("fixed")):
            rows["mixed_model.csv"].append(key + [row.get(c) for c in FIXED_EFFECT_COLUMNS[:-1]]
                                           + [model.get("converged")])
    for entry in _rows(summary.get("items")):
        for row in _rows(entry.get("summary")):
            rows["items.csv"].append([entry.get("question"), entry.get("embodiment"), row.get("item")]
                                     + [row.get(c) for c in SUMMARY_COLUMNS])
    for section in _rows(summary.get("preference")):
        key = [section.get("id"), section.get("question"), section.get("embodiment")]
        for row in _rows(section.get("win_rates")):
            rows["win_rates.csv"].append(key + [row.get(c) for c in TABLES["win_rates.csv"][3:]])
        for row in _rows(section.get("bradley_terry")):
            rows["bradley_terry.csv"].append(key + [row.get(c) for c in TABLES["bradley_terry.csv"][3:]])
    for row in _rows(_dict(summary.get("exclusions")).get("excluded")):
        rows["exclusions.csv"].append([row.get(c) for c in TABLES["exclusions.csv"]])
    return {name: _csv_text(TABLES[name], rows[name]) for name in TABLES}


def _csv_text(header, rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_csv_value(v) for v in row] for row in rows)
    return buffer.getvalue()


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same float
    if isinstance(value, (Mapping, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


# ------------------------------------------------------------------------------------------ document model

@dataclass(frozen=True)
class Cell:
    text: str
    note: str = ""        # why the number is missing, or what it counts (tooltip on the page)
    numeric: bool = True  # set from the column: numbers are right-aligned


@dataclass(frozen=True)
class Column:
    label: str
    numeric: bool = True


@dataclass
class Table:
    columns: list[Column]
    rows: list[list[Cell]]
    caption: str = ""
    notes: list[str] = field(default_factory=list)  # printed below the table
    empty: str = "None."                             # shown instead of a table without rows
    kind: str = "table"

    def __post_init__(self):
        self.rows = [[replace(cell, numeric=column.numeric) for cell, column in zip(row, self.columns)]
                     for row in self.rows]


@dataclass
class Text:
    text: str
    style: str = ""       # "" | "stat" (a test result) | "note" | "meta"
    note: str = ""        # tooltip, e.g. why a number in the line is missing
    kind: str = "text"


@dataclass
class Bullets:
    items: list[str]
    style: str = "note"
    kind: str = "bullets"


@dataclass
class Definitions:
    items: list[tuple[str, str]]
    kind: str = "definitions"


@dataclass
class Message:
    level: str            # "error" | "warning"
    text: str


@dataclass
class Messages:
    items: list[Message]
    kind: str = "messages"


@dataclass
class Figure:
    caption: str
    png: str = ""         # relative to the report folder; "" when missing or unusable
    svg: str = ""
    problem: str = ""     # why the image cannot be shown
    kind: str = "figure"


@dataclass
class Section:
    anchor: str
    heading: str
    level: int            # 2: a part of the report, 3: a block inside it
    parts: list = field(default_factory=list)


def _cell(text: str, note="") -> Cell:
    """A cell; the note is kept only where the number is missing (it says why)."""
    return Cell(text, str(note or "") if text == MISSING else "")


def _document(summary: Mapping, out_dir: Path) -> dict:
    """The report as sections of formatted parts, shared by the HTML page and the PDF."""
    sections = [_messages_section(summary), _exclusions_section(summary), *_rating_sections(summary, out_dir),
                *_item_sections(summary, out_dir), *_preference_sections(summary, out_dir),
                *_objective_sections(summary), *_power_sections(summary, out_dir), _methods_section(summary)]
    seen: dict[str, int] = {}
    for section in sections:  # unique anchors, whatever the block ids are
        count = seen.get(section.anchor, 0)
        seen[section.anchor] = count + 1
        if count:
            section.anchor = f"{section.anchor}-{count + 1}"
    versions = _dict(summary.get("versions"))
    return {
        "schema": SCHEMA,
        "title": str(summary.get("title") or "Untitled study"),
        "header": Definitions(_header_items(summary)),
        "sections": sections,
        "generated_at": _name(summary.get("generated_at")),
        "evalsite_version": str(versions.get("evalsite") or ""),
    }


def _anchor(*parts) -> str:
    text = "-".join(str(p) for p in parts if p not in (None, ""))
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-").lower() or "section"


def _header_items(summary: Mapping) -> list[tuple[str, str]]:
    source = _dict(summary.get("source"))
    kind = source.get("kind")
    if kind == "study":
        origin = f"study {_name(source.get('slug'))}"
        if source.get("version") is not None:
            origin += f", spec version {source.get('version')}"
        if source.get("include_pilot"):
            origin += ", preview, pilot and bot responses included"
    elif kind == "csv":
        origin = f"CSV file {_name(source.get('path'))}"
        if source.get("format"):
            origin += f" ({source.get('format')} format)"
    else:
        origin = _text({k: v for k, v in source.items() if v is not None}) if source else MISSING
    versions = _dict(summary.get("versions"))
    return [
        ("Source", origin),
        ("Design", _label(summary.get("design") or MISSING, _DESIGNS)),
        ("Study spec SHA-256", _name(summary.get("spec_sha256"))),
        ("Data snapshot", _name(summary.get("snapshot_at"))),
        ("Report generated", _name(summary.get("generated_at"))),
        ("Package versions", ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or MISSING),
    ]


def _messages_section(summary: Mapping) -> Section:
    items = []
    for message in _list(summary.get("messages")):
        if isinstance(message, Mapping):
            level = "error" if str(message.get("level")).lower() == "error" else "warning"
            items.append(Message(level, str(message.get("text") or "")))
        elif message:
            items.append(Message("warning", str(message)))
    items.sort(key=lambda m: m.level != "error")  # errors first, otherwise in the order given
    parts = [Messages(items)] if items else [Text("No warnings or errors.", "meta")]
    return Section("messages", "Messages", 2, parts)


def _exclusions_section(summary: Mapping) -> Section:
    data = _dict(summary.get("input"))
    exclusions = _dict(summary.get("exclusions"))
    parts: list = [Text(f"Read {_count(data.get('rows'))} rows from {_count(data.get('participants'))} "
                        "participants.", "meta")]
    dropped = _rows(data.get("dropped"))
    if dropped:
        parts.append(Table([Column("Reason", False), Column("Rows")],
                           [[_cell(_name(d.get("reason"))), _cell(_count(d.get("rows")))] for d in dropped],
                           caption="Rows that could not be used"))
    rules = sorted(_rows(exclusions.get("rules")), key=lambda r: (_number(r.get("order")) is None,
                                                                  _number(r.get("order")) or 0))
    parts.append(Text("Exclusion rules run in this fixed order; a participant is listed under the first rule "
                      "that excluded them.", "meta"))
    parts.append(Table(
        [Column("Order"), Column("Rule", False), Column("Description", False), Column("Applied", False)],
        [[_cell(_count(r.get("order"))), _cell(_name(r.get("rule"))),
          _cell(_name(r.get("description"))), _cell(_yes_no(r.get("applied")))] for r in rules],
        caption="Rules", empty="No exclusion rules were run."))
    before_p, after_p = exclusions.get("n_participants_before"), exclusions.get("n_participants_after")
    before_r, after_r = exclusions.get("n_ratings_before"), exclusions.get("n_ratings_after")
    parts.append(Table(
        [Column("", False), Column("Before"), Column("After"), Column("Excluded")],
        [[_cell("Participants"), _cell(_count(before_p)), _cell(_count(after_p)),
          _cell(_difference(before_p, after_p))],
         [_cell("Ratings"), _cell(_count(before_r)), _cell(_count(after_r)),
          _cell(_difference(before_r, after_r))]],
        caption="Counts before and after exclusions"))
    parts.append(Table(
        [Column("Participant", False), Column("Rule", False), Column("Reason", False)],
        [[_cell(_name(e.get("participant"))), _cell(_name(e.get("rule"))),
          _cell(_name(e.get("reason")))] for e in _rows(exclusions.get("excluded"))],
        caption="Excluded participants", empty="No participant was excluded."))
    return Section("exclusions", "Exclusions", 2, parts)


def _difference(before, after) -> str:
    b, a = _number(before), _number(after)
    return MISSING if b is None or a is None else _count(b - a)


def _summary_columns(level: str, first: list[Column]) -> list[Column]:
    return first + [Column("n ratings"), Column("n participants"), Column("Mean"), Column("Median"), Column("SD"),
                    Column(f"{level} CI (bootstrap)"), Column(f"{level} CI (t)")]


def _summary_cells(row: Mapping) -> list[Cell]:
    return [_cell(_count(row.get("n_ratings"))), _cell(_count(row.get("n_participants"))),
            _cell(_dec(row.get("mean"))), _cell(_dec(row.get("median"))), _cell(_dec(row.get("sd"))),
            _cell(format_ci(row.get("ci_boot_low"), row.get("ci_boot_high")),
                  "not defined with fewer than two participants"),
            _cell(format_ci(row.get("ci_t_low"), row.get("ci_t_high")),
                  "not defined with fewer than two participants")]


def _heading(*values) -> str:
    return " · ".join(str(v) for v in values if v not in (None, "")) or "All ratings"


def _rating_sections(summary: Mapping, out_dir: Path) -> list[Section]:
    blocks = _rows(summary.get("blocks"))
    intro = Section("ratings", "Ratings", 2, [Text(
        "One block per rated question, item and embodiment. Conditions are ordered by mean, highest first; "
        "tests run on each participant's mean rating per condition." if blocks else
        "No rated questions in these data.", "meta")])
    return [intro] + [_block_section(block, summary, out_dir) for block in blocks]


def _block_section(block: Mapping, summary: Mapping, out_dir: Path) -> Section:
    settings = _dict(summary.get("settings"))
    level = _level(settings)
    scale = _dict(block.get("scale"))
    kind = str(block.get("question_type") or "rating")
    meta = (f"Design: {_label(block.get('design') or MISSING, _DESIGNS)} · {kind} scale "
            f"{_count(scale.get('min'))}–{_count(scale.get('max'))} · {_count(block.get('n_ratings'))} ratings from "
            f"{_count(block.get('n_participants'))} participants.")
    parts: list = [Text(meta, "meta")]
    notes = [str(n) for n in _list(block.get("notes")) if n]
    if notes:
        parts.append(Bullets(notes))
    parts.append(Table(_summary_columns(level, [Column("Condition", False)]),
                       [[_cell(_name(r.get("condition")))] + _summary_cells(r)
                        for r in _rows(block.get("summary"))],
                       caption="Ratings per condition", empty="No ratings."))
    parts += _omnibus_parts(block.get("omnibus"))
    parts.append(_pairwise_table(_rows(block.get("pairwise")), settings))
    parts += _figures(block.get("figures"), out_dir)
    parts += _mixed_model_parts(block.get("mixed_model"), level)
    parts += _reliability_parts(block.get("reliability"))
    heading = _heading(block.get("question"), block.get("item"), block.get("embodiment"))
    if block.get("id"):
        heading += f" ({block.get('id')})"  # messages name blocks by id
    return Section(_anchor("block", block.get("id") or heading), heading, 3, parts)


def _omnibus_parts(omnibus) -> list:
    if not isinstance(omnibus, Mapping):
        return [Text("Omnibus test: not run (fewer than two conditions).", "stat")]
    test = str(omnibus.get("test") or "")
    name, symbol, has_df = _OMNIBUS_NAMES.get(test, (test or "Omnibus test", "statistic", False))
    left = f"{name} {symbol}({_count(omnibus.get('df'))})" if has_df else f"{name} {symbol}"
    line = f"{left} = {_dec(omnibus.get('statistic'))}, {format_p(omnibus.get('p'))}"
    if omnibus.get("n_participants") is not None:
        line += f", N = {_count(omnibus.get('n_participants'))} participants"
    note = str(omnibus.get("note") or "")
    parts = [Text(line, "stat", note)]
    if note:
        parts.append(Text(note, "note"))
    return parts


def _pairwise_table(rows: list[Mapping], settings: Mapping) -> Table:
    correction = str(settings.get("correction") or "")
    alpha = _number(settings.get("alpha"))
    adjusted = (f"p adjusted by {_CORRECTIONS[correction]}" if correction in _CORRECTIONS and correction != "none"
                else "p not adjusted")
    caption = (f"Pairwise comparisons ({adjusted}; * significant at α = {_text(alpha)}). Effect sizes are "
               "positive when A is rated higher than B.")
    columns = [Column("A", False), Column("B", False), Column("Test", False), Column("n"), Column("Statistic"),
               Column("p"), Column("p adj."), Column("Sig.", False), Column("Rank-biserial r"), Column("Cliff's δ"),
               Column("Cohen's d")]
    table_rows, notes = [], []
    for r in rows:
        note = str(r.get("note") or "")
        significant = r.get("significant")
        table_rows.append([
            _cell(_name(r.get("a"))), _cell(_name(r.get("b"))),
            _cell(_TEST_NAMES.get(str(r.get("test")), _name(r.get("test")))),
            _cell(_count(r.get("n")), note), _cell(_dec(r.get("statistic")), note),
            _cell(format_p(r.get("p"), prefix=False), note), _cell(format_p(r.get("p_adj"), prefix=False), note),
            _cell(MISSING if significant is None else ("*" if significant else ""), note),
            _cell(_dec(r.get("rank_biserial")), note), _cell(_dec(r.get("cliffs_delta")), note),
            _cell(_dec(r.get("cohens_d")), note)])
        if note:
            notes.append(f"{r.get('a')} vs {r.get('b')}: {note}")
    return Table(columns, table_rows, caption=caption, notes=notes, empty="No pairwise comparisons.")


def _mixed_model_parts(model, level: str) -> list:
    if not isinstance(model, Mapping):
        return []
    line = (f"Mixed model: {_name(model.get('formula'))}, fitted on {_count(model.get('n'))} ratings; "
            f"converged: {_yes_no(model.get('converged'))}.")
    note = str(model.get("note") or "")
    fixed = [[_cell(_name(r.get("term"))), _cell(_dec(r.get("estimate")), note),
              _cell(_dec(r.get("se")), note), _cell(_dec(r.get("z")), note),
              _cell(format_p(r.get("p"), prefix=False), note),
              _cell(format_ci(r.get("ci_low"), r.get("ci_high")), note)]
             for r in _rows(model.get("fixed"))]
    variance = _dict(model.get("variance"))
    parts: list = [Text(line, "stat", note),
                   Table([Column("Term", False), Column("Estimate"), Column("SE"), Column("z"),
                          Column("p"), Column(f"{level} CI")], fixed, caption="Fixed effects",
                         empty="No fixed effects were estimated."),
                   Text("Variance components: " + ", ".join(f"{k} {_dec(variance.get(k))}"
                                                            for k in ("participant", "stimulus", "residual"))
                        + ".", "meta", note)]
    if note:
        parts.append(Text(note, "note"))
    return parts


def _reliability_parts(reliability) -> list:
    if not isinstance(reliability, Mapping):
        return []
    note = str(reliability.get("note") or "")
    parts: list = [Text(f"Inter-rater reliability, Krippendorff's α: interval {_dec(reliability.get('interval'))}, "
                        f"ordinal {_dec(reliability.get('ordinal'))}.", "stat", note)]
    if note:
        parts.append(Text(note, "note"))
    return parts


def _safe_path(path) -> str:
    """`path` when it is a relative path inside the report folder, else "" (never a URL or an escape)."""
    if not isinstance(path, str) or not path or "\\" in path or ":" in path:
        return ""
    pure = PurePosixPath(path)
    return "" if pure.is_absolute() or ".." in pure.parts else pure.as_posix()


def _figures(figures, out_dir: Path) -> list[Figure]:
    figures = _dict(figures)
    known = [k for k in _FIGURES if k in figures]
    out = []
    for key in known + sorted(k for k in figures if k not in _FIGURES):
        paths = figures[key] if isinstance(figures[key], (list, tuple)) else [figures[key]]
        paths = [p for p in paths if isinstance(p, str)]
        png = next((p for p in paths if p.lower().endswith(".png")), "")
        svg = next((p for p in paths if p.lower().endswith(".svg")), "")
        figure = Figure(_label(key, _FIGURES), _safe_path(png), _safe_path(svg))
        if not png:
            figure.problem = "no PNG image was written for this figure"
        elif not figure.png:
            figure.problem = f"{png} is not a path inside the report folder"
        elif not (out_dir / figure.png).is_file():
            figure.problem = f"{figure.png} is missing"
            figure.png = ""
        out.append(figure)
    return out


def _item_sections(summary: Mapping, out_dir: Path) -> list[Section]:
    entries = _rows(summary.get("items"))
    if not entries:
        return []
    level = _level(_dict(summary.get("settings")))
    sections = [Section("items", "Per-item breakdown", 2, [Text(
        "Questions rated on several items (e.g. face regions), each item's ratings per condition.", "meta")])]
    for entry in entries:
        heading = _heading(entry.get("question"), entry.get("embodiment"))
        table = Table(_summary_columns(level, [Column("Item", False), Column("Condition", False)]),
                      [[_cell(_name(r.get("item"))), _cell(_name(r.get("condition")))]
                       + _summary_cells(r) for r in _rows(entry.get("summary"))],
                      caption="Ratings per item and condition", empty="No ratings.")
        sections.append(Section(_anchor("items", heading), heading, 3,
                                [table, *_figures(entry.get("figures"), out_dir)]))
    return sections


def _preference_sections(summary: Mapping, out_dir: Path) -> list[Section]:
    entries = _rows(summary.get("preference"))
    if not entries:
        return []
    level = _level(_dict(summary.get("settings")))
    sections = [Section("preference", "Pairwise preference", 2, [Text(
        "Forced-choice comparisons between two conditions; a tie counts half a win.", "meta")])]
    for entry in entries:
        heading = _heading(entry.get("question"), entry.get("embodiment"))
        parts: list = [Text(f"{_count(entry.get('n_choices'))} choices from {_count(entry.get('n_participants'))} "
                            "participants.", "meta")]
        notes = [str(n) for n in _list(entry.get("notes")) if n]
        if notes:
            parts.append(Bullets(notes))
        parts.append(Table(
            [Column("Condition", False), Column("Wins"), Column("Losses"), Column("Ties"), Column("n"),
             Column("Win rate")],
            [[_cell(_name(r.get("condition"))), _cell(_count(r.get("wins"))), _cell(_count(r.get("losses"))),
              _cell(_count(r.get("ties"))), _cell(_count(r.get("n"))), _cell(_dec(r.get("win_rate")))]
             for r in _rows(entry.get("win_rates"))],
            caption="Win rates: (wins + ties/2) / n", empty="No choices."))
        parts.append(_win_matrix_table(_dict(entry.get("win_matrix"))))
        bt_note = str(entry.get("bradley_terry_note") or "")
        parts.append(Table(
            [Column("Condition", False), Column("Score"), Column(f"{level} CI")],
            [[_cell(_name(r.get("condition"))), _cell(_dec(r.get("score")), bt_note),
              _cell(format_ci(r.get("ci_low"), r.get("ci_high")), bt_note)] for r in _rows(entry.get("bradley_terry"))],
            caption=f"Bradley–Terry scores (log strength, mean 0) with {level} participant-bootstrap intervals",
            notes=[bt_note] if bt_note else [], empty="No Bradley–Terry scores."))
        parts += _matched_parts(entry.get("matched_vs_mismatched"), level)
        parts += _figures(entry.get("figures"), out_dir)
        if entry.get("id"):
            heading += f" ({entry.get('id')})"
        sections.append(Section(_anchor("preference", entry.get("id") or heading), heading, 3, parts))
    return sections


def _win_matrix_table(matrix: Mapping) -> Table:
    names = [str(c) for c in _list(matrix.get("conditions"))]
    shares, counts = _list(matrix.get("share")), _list(matrix.get("n"))

    def at(grid, i, j):
        row = grid[i] if i < len(grid) and isinstance(grid[i], (list, tuple)) else []
        return row[j] if j < len(row) else None

    rows = []
    for i, name in enumerate(names):
        cells = [_cell(name)]
        for j in range(len(names)):
            share, n = _dec(at(shares, i, j)), at(counts, i, j)
            if share == MISSING:
                cells.append(_cell(MISSING, "same condition" if i == j else "never compared"))
            else:
                cells.append(Cell(f"{share} ({_count(n)})", f"{_count(n)} trials"))
        rows.append(cells)
    return Table([Column("Row beats column", False)] + [Column(n) for n in names], rows,
                 caption="Win matrix: share of trials in which the row condition beat the column condition "
                         "(number of trials)", empty="No comparisons.")


def _matched_parts(mvm, level: str) -> list:
    if not isinstance(mvm, Mapping):
        return []
    note = str(mvm.get("note") or "")
    mismatched = _text(mvm.get("mismatched"))
    line = (f"Matched vs mismatched: {_name(mvm.get('matched'))} was chosen over {mismatched} in "
            f"{_count(mvm.get('matched_wins'))} of {_count(mvm.get('n'))} trials without ties "
            f"(share {_dec(mvm.get('share'))}, {level} CI {format_ci(mvm.get('ci_low'), mvm.get('ci_high'))}); "
            f"exact binomial test against 50%, {format_p(mvm.get('p'))}.")
    parts: list = [Text(line, "stat", note)]
    if note:
        parts.append(Text(note, "note"))
    return parts


def _objective_sections(summary: Mapping) -> list[Section]:
    rows = _rows(summary.get("objective_metrics"))
    if not rows:
        return []
    names: list[str] = []
    for row in rows:
        names += [str(k) for k in _dict(row.get("metrics")) if str(k) not in names]
    table = Table([Column("Model", False), Column("Kind", False), Column("Condition", False)]
                  + [Column(n) for n in names],
                  [[_cell(_name(r.get("model"))), _cell(_name(r.get("kind"))),
                    _cell(_name(r.get("condition")))]
                   + [_cell(_general({str(k): v for k, v in _dict(r.get("metrics")).items()}.get(n))) for n in names]
                   for r in rows],
                  caption="Objective metrics of the models behind the conditions")
    return [Section("objective-metrics", "Objective metrics", 2, [table])]


def _power_sections(summary: Mapping, out_dir: Path) -> list[Section]:
    plan = summary.get("power")
    if not isinstance(plan, Mapping):
        return []
    target = _number(plan.get("target"))
    curve = _rows(plan.get("curve"))
    if plan.get("n_needed") is not None:
        result = f"Smallest number of participants reaching power {_dec(target)}: {_count(plan.get('n_needed'))}."
    else:
        largest = max((_number(p.get("n")) or 0 for p in curve), default=None)
        result = (f"Power {_dec(target)} was not reached with up to {_count(largest)} participants."
                  if largest else "No sample sizes were simulated.")
    parts: list = [Text(result, "stat")]
    if plan.get("method"):
        parts.append(Text(str(plan.get("method")), "meta"))
    parts.append(Table([Column("Participants"), Column("Power"), Column("Any pair significant")],
                       [[_cell(_count(p.get("n"))), _cell(_dec(p.get("power"))), _cell(_dec(p.get("any_significant")))]
                        for p in curve], caption="Power by total number of participants", empty="No points."))
    if isinstance(plan.get("plan"), Mapping):
        parts += [Text("Simulation plan", "stat"),
                  Definitions([(str(k), _text(v)) for k, v in sorted(plan["plan"].items())])]
    parts += _figures(plan.get("figures"), out_dir)
    return [Section("power", "Power planning", 2, parts)]


def _methods_section(summary: Mapping) -> Section:
    methods = _dict(summary.get("methods"))
    settings = _dict(summary.get("settings"))
    method_items = [(_label(k, _METHODS), str(v)) for k, v in methods.items()]
    keys = [k for k in _SETTINGS if k in settings] + sorted(k for k in settings if k not in _SETTINGS)
    setting_items = []
    for key in keys:
        value = settings[key]
        if key == "correction":
            text = f"{value} ({_CORRECTIONS[value]})" if value in _CORRECTIONS else _text(value)
        elif key == "ci_level":
            text = _level(settings)
        elif key == "rules":
            text = _text(value) if value else "defaults"
        elif key == "power":
            text = _text(value) if value else "not asked for"
        else:
            text = _text(value)
        setting_items.append((_label(key, _SETTINGS), text))
    return Section("methods", "Methods", 2, [
        Text("Every number in this report is in summary.json next to it, and the tables are in tables/*.csv; "
             "running the same analysis with these settings on the same data gives the same numbers.", "meta"),
        Definitions(method_items) if method_items else Text("No methods listed.", "meta"),
        Text("Settings", "stat"),
        Definitions(setting_items) if setting_items else Text("No settings recorded.", "meta"),
    ])


# ------------------------------------------------------------------------------------------------ HTML page

def _html(document: dict) -> str:
    from django.template.loader import render_to_string

    return render_to_string("studies/report.html", document)


# ------------------------------------------------------------------------------------------------------ PDF

_FONT_LOCK = threading.Lock()
_FONT = "EvalsiteSans"


def _pdf_fonts() -> tuple[str, str]:
    """(regular, bold) font names. DejaVu Sans (shipped with matplotlib, as in the figures) covers χ, δ,
    α and any condition name; ASCII stays readable in the PDF's text. Helvetica when it cannot be found."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    with _FONT_LOCK:
        if _FONT in pdfmetrics.getRegisteredFontNames():
            return _FONT, f"{_FONT}-Bold"
        try:
            import matplotlib

            folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
            faces = {"": "DejaVuSans.ttf", "-Bold": "DejaVuSans-Bold.ttf", "-Oblique": "DejaVuSans-Oblique.ttf",
                     "-BoldOblique": "DejaVuSans-BoldOblique.ttf"}
            fonts = [TTFont(f"{_FONT}{suffix}", str(folder / name), asciiReadable=True)
                     for suffix, name in faces.items()]
        except Exception:  # noqa: BLE001 - any unreadable font file: fall back to the built-in font
            return "Helvetica", "Helvetica-Bold"
        for font in fonts:
            pdfmetrics.registerFont(font)
        pdfmetrics.registerFontFamily(_FONT, normal=_FONT, bold=f"{_FONT}-Bold", italic=f"{_FONT}-Oblique",
                                      boldItalic=f"{_FONT}-BoldOblique")
        return _FONT, f"{_FONT}-Bold"


def _undated_canvas():
    """A reportlab canvas whose document information has no creation or modification date."""
    from reportlab.pdfbase.pdfdoc import PDFDictionary, PDFInfo, PDFName, PDFString
    from reportlab.pdfgen.canvas import Canvas

    class UndatedInfo(PDFInfo):
        def format(self, document):
            return PDFDictionary({
                "Title": PDFString(self.title), "Author": PDFString(self.author),
                "Subject": PDFString(self.subject), "Keywords": PDFString(self.keywords),
                "Creator": PDFString(self.creator), "Producer": PDFString(self.producer),
                "Trapped": PDFName(self.trapped)}).format(document)

    class UndatedCanvas(Canvas):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            info = UndatedInfo()
            info.__dict__.update(self._doc.info.__dict__)
            self._doc.info = info

    return UndatedCanvas


def _pdf_bytes(document: dict, out_dir: Path, *, compress: bool) -> bytes:
    # reportlab is imported here, not at the top, so the dashboard's format_p does not load it.
    from PIL import Image as PILImage
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_RIGHT
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.pdfbase.pdfmetrics import stringWidth
    from reportlab.platypus import Image, KeepTogether, Paragraph, SimpleDocTemplate, Spacer
    from reportlab.platypus import Table as PdfTable
    from reportlab.platypus import TableStyle

    regular, bold = _pdf_fonts()
    base = ParagraphStyle("body", fontName=regular, fontSize=9, leading=12, spaceAfter=4)
    styles = {
        "title": ParagraphStyle("title", base, fontName=bold, fontSize=16, leading=20, spaceAfter=8),
        "h2": ParagraphStyle("h2", base, fontName=bold, fontSize=13, leading=16, spaceBefore=12, spaceAfter=6,
                             keepWithNext=1),
        "h3": ParagraphStyle("h3", base, fontName=bold, fontSize=11, leading=14, spaceBefore=10, spaceAfter=4,
                             keepWithNext=1),
        "": base,
        "meta": ParagraphStyle("meta", base, textColor=colors.HexColor("#444444")),
        "stat": ParagraphStyle("stat", base, fontName=bold),
        "note": ParagraphStyle("note", base, fontSize=7.5, leading=9.5, textColor=colors.HexColor("#555555")),
        "caption": ParagraphStyle("caption", base, fontName=bold, fontSize=8, leading=10, spaceAfter=2,
                                  keepWithNext=1),
        "cell": ParagraphStyle("cell", base, fontSize=7.5, leading=9, spaceAfter=0),
        "head": ParagraphStyle("head", base, fontName=bold, fontSize=7.5, leading=9, spaceAfter=0),
        "message": ParagraphStyle("message", base, spaceAfter=0),
    }
    styles["cell_num"] = ParagraphStyle("cell_num", styles["cell"], alignment=TA_RIGHT)
    styles["head_num"] = ParagraphStyle("head_num", styles["head"], alignment=TA_RIGHT)

    buffer = io.BytesIO()
    template = SimpleDocTemplate(
        buffer, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm, topMargin=18 * mm, bottomMargin=18 * mm,
        title=document["title"], author="evalsite", subject="Significance report", creator="evalsite",
        invariant=1, pageCompression=1 if compress else 0, lang="en")
    width, height = template.width - 12, template.height - 12  # the frame's padding is 6 pt a side

    def para(text, style="") -> Paragraph:
        return Paragraph(xml_escape(str(text)), styles[style])

    rule = colors.HexColor("#333333")

    def table(part: Table) -> list:
        out = [para(part.caption, "caption")] if part.caption else []
        if not part.rows:
            return out + [para(part.empty, "meta")]
        header = [para(c.label, "head_num" if c.numeric else "head") for c in part.columns]
        body = [[para(cell.text, "cell_num" if cell.numeric else "cell") for cell in row] for row in part.rows]
        grid = PdfTable([header] + body, colWidths=column_widths(part), repeatRows=1, hAlign="LEFT")
        grid.setStyle(TableStyle([
            ("LINEABOVE", (0, 0), (-1, 0), 0.8, rule), ("LINEBELOW", (0, 0), (-1, 0), 0.5, rule),
            ("LINEBELOW", (0, -1), (-1, -1), 0.8, rule), ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("TOPPADDING", (0, 0), (-1, -1), 2), ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
            ("LEFTPADDING", (0, 0), (-1, -1), 3), ("RIGHTPADDING", (0, 0), (-1, -1), 3)]))
        out.append(grid)
        out += [para(note, "note") for note in part.notes]
        return out + [Spacer(1, 6)]

    def column_widths(part: Table) -> list[float]:
        """Widths from the content: every column as wide as its longest line when the table fits the frame;
        otherwise wide enough for its longest word (numbers never wrap) and the rest shared by need."""
        size, padding = styles["cell"].fontSize, 7

        def measure(text, font):
            return stringWidth(text, font, size) + padding

        natural, minimum = [], []
        for i, column in enumerate(part.columns):
            texts = [row[i].text for row in part.rows]
            natural.append(max([measure(column.label, bold)] + [measure(t, regular) for t in texts]))
            words = [measure(w, bold) for w in column.label.split()] + [
                measure(t, regular) if column.numeric else max((measure(w, regular) for w in t.split()), default=0)
                for t in texts]
            minimum.append(min(max(words, default=padding), width / 3))
        if sum(natural) <= width:
            return natural
        spare = width - sum(minimum)
        if spare <= 0:
            return [w * width / sum(minimum) for w in minimum]
        need = [n - m for n, m in zip(natural, minimum)]
        return [m + spare * d / sum(need) for m, d in zip(minimum, need)]

    def definitions(part: Definitions) -> list:
        if not part.items:
            return []
        grid = PdfTable([[para(term, "head"), para(value, "cell")] for term, value in part.items],
                        colWidths=[width * 0.34, width * 0.66], hAlign="LEFT")
        grid.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("TOPPADDING", (0, 0), (-1, -1), 1.5),
                                  ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5), ("LEFTPADDING", (0, 0), (-1, -1), 0)]))
        return [grid, Spacer(1, 6)]

    def messages(part: Messages) -> list:
        out = []
        for message in part.items:
            label = "Error" if message.level == "error" else "Warning"
            box = PdfTable([[Paragraph(f"<b>{label}:</b> {xml_escape(message.text)}", styles["message"])]],
                           colWidths=[width], hAlign="LEFT")
            fill, edge = (("#fde8e8", "#b42318") if message.level == "error" else ("#fff4dc", "#b54708"))
            box.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, -1), colors.HexColor(fill)),
                                     ("BOX", (0, 0), (-1, -1), 1, colors.HexColor(edge)),
                                     ("TOPPADDING", (0, 0), (-1, -1), 4), ("BOTTOMPADDING", (0, 0), (-1, -1), 4)]))
            out += [box, Spacer(1, 4)]
        return out

    def figure(part: Figure) -> list:
        links = "; ".join(f"{kind}: {path}" for kind, path in (("PNG", part.png), ("SVG", part.svg)) if path)
        caption = para(f"{part.caption}." + (f" {links}" if links else ""), "note")
        if part.problem or not part.png:
            return [para(f"{part.caption}: not shown ({part.problem or 'no image'}).", "note")]
        path = out_dir / part.png
        try:
            with PILImage.open(path) as image:
                (pixels_w, pixels_h), dpi = image.size, image.info.get("dpi")
        except Exception:  # noqa: BLE001 - an unreadable image is reported, not fatal
            return [para(f"{part.caption}: not shown ({part.png} could not be read).", "note")]
        # The figure's own print size (its fonts then match the text), shrunk to fit the frame; the frame
        # width when the PNG does not say its resolution.
        w = pixels_w / float(dpi[0]) * 72 if dpi and float(dpi[0]) > 0 else width
        w = min(w, width)
        h = w * pixels_h / pixels_w
        if h > height * 0.85:  # a tall figure is shrunk to fit the page with its caption
            h = height * 0.85
            w = h * pixels_w / pixels_h
        return [KeepTogether([Image(str(path), width=w, height=h, hAlign="LEFT"), caption]), Spacer(1, 6)]

    story: list = [para(document["title"], "title"), para(f"Significance report · schema {document['schema']}", "meta")]
    story += definitions(document["header"])
    for section in document["sections"]:
        story.append(para(section.heading, "h2" if section.level == 2 else "h3"))
        for part in section.parts:
            if isinstance(part, Table):
                story += table(part)
            elif isinstance(part, Text):
                story.append(para(part.text, part.style if part.style in styles else ""))
            elif isinstance(part, Bullets):
                story += [para(f"• {item}", part.style) for item in part.items]
            elif isinstance(part, Definitions):
                story += definitions(part)
            elif isinstance(part, Messages):
                story += messages(part)
            elif isinstance(part, Figure):
                story += figure(part)

    footer_text = f"{document['title']} · significance report · generated {document['generated_at']}"

    def footer(canvas, doc):
        canvas.saveState()
        canvas.setFont(regular, 7)
        canvas.setFillColor(colors.HexColor("#666666"))
        canvas.drawString(doc.leftMargin, 10 * mm, footer_text[:150])
        canvas.drawRightString(doc.pagesize[0] - doc.rightMargin, 10 * mm, f"page {doc.page}")
        canvas.restoreState()

    template.build(story, onFirstPage=footer, onLaterPages=footer, canvasmaker=_undated_canvas())
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------- writing

def _write_atomic(path: Path, data: bytes) -> None:
    """Write under a temporary name in the same folder, then rename over `path`. The file gets the usual
    permissions (0666 less the umask), unlike tempfile's private 0600, so a web server can serve it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}-{secrets.token_hex(4)}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_report(summary: dict, out_dir: Path, *, compress: bool = True) -> dict[str, Path]:
    """Write summary.json, tables/*.csv, index.html and report.pdf for `summary` (docs/report-schema.md)
    into `out_dir`, whose figures/ the caller has already written (paths in the summary are relative to
    `out_dir`). `compress=False` leaves the PDF's page streams uncompressed (tests search its text).

    Returns {"html", "pdf", "json", "tables"} paths. Raises ValueError when `summary` is not an
    evalsite.report/1 summary; anything else missing or None is shown as missing, never an error.
    """
    if not isinstance(summary, Mapping) or summary.get("schema") != SCHEMA:
        found = summary.get("schema") if isinstance(summary, Mapping) else type(summary).__name__
        raise ValueError(f"write_report needs a summary with schema {SCHEMA!r} (got {found!r}); build it with "
                         "studies.analysis.run.run_analysis or see docs/report-schema.md.")
    out_dir = Path(out_dir)
    clean = _clean(summary)
    # Everything is rendered before anything is written, so an error leaves the previous report whole.
    text = _summary_json(clean)
    tables = _csv_tables(clean)
    document = _document(clean, out_dir)
    html = _html(document)
    pdf = _pdf_bytes(document, out_dir, compress=compress)

    tables_dir = out_dir / "tables"
    tables_dir.mkdir(parents=True, exist_ok=True)
    for name, content in tables.items():
        _write_atomic(tables_dir / name, content.encode("utf-8"))
    paths = {"json": out_dir / "summary.json", "html": out_dir / "index.html", "pdf": out_dir / "report.pdf",
             "tables": tables_dir}
    _write_atomic(paths["json"], text.encode("utf-8"))
    _write_atomic(paths["html"], html.encode("utf-8"))
    _write_atomic(paths["pdf"], pdf)
    return {"html": paths["html"], "pdf": paths["pdf"], "json": paths["json"], "tables": tables_dir}
