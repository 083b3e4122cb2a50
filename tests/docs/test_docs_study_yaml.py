"""Keeps the guide's reference pages true to the code: docs/study-yaml.md (every key and default of the study
YAML, its examples, design arithmetic and validation messages), docs/concepts.md (its YAML), docs/statistics.md
(the options, tests, corrections, exclusion order and methods it names) and docs/bundle.md (the files and
columns of a stimulus bundle, checked on a real export of the demo study).

Everything is read from the Markdown files themselves (tables, fenced blocks), so a doc that drifts from the
code fails here."""
from __future__ import annotations

import csv
import io
import math
import re
import zipfile
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command, get_commands, load_command_class

from studies import design, spec as spec_module
from studies.spec import (CONDITION_KEYS, MTURK_KEYS, QUALITY_KEYS, RECRUITMENT_KEYS, RENDER_KEYS, STIMULI_KEYS,
                          TOP_KEYS, SpecError, page_treatments, parse_spec)
from tests.docs import assert_parses, fenced_blocks, manage_calls

DOCS = Path(__file__).resolve().parents[2] / "docs"


# ----------------------------------------------------------------------------------------- Markdown helpers
def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def sections(text: str) -> dict[str, str]:
    """Heading text (without the #'s) -> the text up to the next heading of any level."""
    out, current, lines = {}, None, []
    in_fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        heading = None if in_fence else re.match(r"^#{1,6}\s+(.*\S)\s*$", line)
        if heading:
            if current is not None:
                out[current] = "\n".join(lines)
            current, lines = heading.group(1), []
        else:
            lines.append(line)
    if current is not None:
        out[current] = "\n".join(lines)
    return out


def split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [c.strip() for c in cells]


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table in `text` as a list of rows (header cell -> cell)."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].lstrip().startswith("|") and i + 1 < len(lines) and re.match(r"^\s*\|[\s:|-]+\|\s*$", lines[i + 1]):
            header = split_row(lines[i])
            rows = []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                cells = split_row(lines[i])
                rows.append(dict(zip(header, cells)))
                i += 1
            found.append(rows)
        else:
            i += 1
    return found


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def key_table(text: str, heading: str) -> dict[str, str]:
    """The `key | ... | default | ...` table under `heading`: key -> default cell."""
    body = sections(text)[heading]
    keyed = [t for t in tables(body) if t and "key" in t[0] and "default" in t[0]]
    assert len(keyed) == 1, f"expected one key table under '{heading}', found {len(keyed)}"
    out = {}
    for row in keyed[0]:
        names = code_spans(row["key"])
        assert len(names) == 1, f"'{heading}': the key cell {row['key']!r} should hold one `key`"
        assert names[0] not in out, f"'{heading}': `{names[0]}` is listed twice"
        out[names[0]] = row["default"]
    return out


# ----------------------------------------------------------------------------------------- study-yaml.md
STUDY_YAML = "study-yaml.md"

# A spec with every question type (each with items) and every page type, so every mapping the checker reads
# is seen with the keys it allows.
EVERY_KIND = """
slug: every-kind
title: Every kind of question and page
stimuli:
  corpus: c
  conditions: [ground_truth, still, {name: m, kind: model, model: x}]
questions:
  l: {type: likert, prompt: p, items: [{key: a, text: t}]}
  s: {type: slider, prompt: p, items: [{key: a, text: t}]}
  w: {type: pairwise, prompt: p, items: [{key: a, text: t}]}
pages:
  - type: consent
  - type: instructions
  - type: av_check
  - {type: training, question: l}
  - {type: trials, question: l}
  - type: demographics
  - type: completion
"""


def checker_tables(monkeypatch) -> dict[str, dict]:
    """Section heading of docs/study-yaml.md -> the keys (with defaults) the spec checker really allows there,
    captured from every `_Checker.mapping` call while parsing EVERY_KIND."""
    seen: list[tuple[str, dict]] = []
    original = spec_module._Checker.mapping

    def recording(self, value, path, allowed):
        seen.append((path, dict(allowed)))
        return original(self, value, path, allowed)

    monkeypatch.setattr(spec_module._Checker, "mapping", recording)
    parsed = parse_spec(EVERY_KIND)
    monkeypatch.undo()

    qtype = {k: q["type"] for k, q in parsed["questions"].items()}
    ptype = [p["type"] for p in parsed["pages"]]
    by_section: dict[str, dict] = {}

    def put(section, allowed):
        assert by_section.setdefault(section, allowed) == allowed, f"{section}: two different key sets"

    fixed = {"": "Top level", "stimuli": "`stimuli`", "stimuli.render": "`stimuli.render`", "quality": "`quality`",
             "recruitment": "`recruitment`", "recruitment.mturk": "`recruitment.mturk`"}
    for path, allowed in seen:
        if path in fixed:
            put(fixed[path], allowed)
        elif re.fullmatch(r"stimuli\.conditions\[\d+\]", path):
            put("A condition written as a mapping", allowed)
        elif re.fullmatch(r"questions\.\w+\.items\[\d+\]", path):
            put("Question items", allowed)
        elif m := re.fullmatch(r"questions\.(\w+)", path):
            put(f"`{qtype[m.group(1)]}`", allowed)
        elif m := re.fullmatch(r"pages\[(\d+)\]", path):
            put(f"`{ptype[int(m.group(1))]}`", allowed)
        elif path == "recruitment.prolific":
            assert allowed == {}, "recruitment.prolific now takes keys: document them in docs/study-yaml.md"
        else:
            raise AssertionError(f"the spec checker reads a mapping at {path!r} that no doc section covers")
    # Keys every question / page shares are documented once, under `questions` / `pages`.
    questions = [by_section.pop(f"`{t}`") for t in spec_module.QUESTION_TYPES]
    common_q = {k: v for k, v in questions[0].items() if all(k in q and q[k] == v for q in questions)}
    by_section["`questions`"] = common_q
    for t, q in zip(spec_module.QUESTION_TYPES, questions):
        by_section[f"`{t}`"] = {k: v for k, v in q.items() if k not in common_q}
    pages = [by_section.pop(f"`{t}`") for t in spec_module.PAGE_TYPES]
    common_p = {k: v for k, v in pages[0].items() if all(k in p and p[k] == v for p in pages)}
    by_section["`pages`"] = common_p
    for t, p in zip(spec_module.PAGE_TYPES, pages):
        by_section[f"`{t}`"] = {k: v for k, v in p.items() if k not in common_p}
    return by_section


def assert_default_matches(section: str, key: str, cell: str, code_default) -> None:
    where = f"docs/study-yaml.md, '{section}', `{key}`"
    if cell.startswith("`"):
        spans = code_spans(cell)
        assert len(spans) == 1 and cell == f"`{spans[0]}`", f"{where}: write the default as one `value`"
        stated = yaml.safe_load(spans[0])
        assert stated == code_default and type(stated) is type(code_default), (
            f"{where}: the doc says {stated!r}, the code's default is {code_default!r}")
    elif cell in ("*required*", "—"):
        assert code_default is None, f"{where}: the doc says {cell}, but the code's default is {code_default!r}"
    elif cell.startswith("*"):  # a long default text described in words
        assert isinstance(code_default, str) and len(code_default) > 60, (
            f"{where}: the doc describes a long default text, the code's default is {code_default!r}")
    else:
        raise AssertionError(f"{where}: default cell {cell!r} is neither `value`, *required*, — nor *a description*")


def test_every_key_of_the_spec_tables_is_documented_with_its_default(monkeypatch):
    text = read(STUDY_YAML)
    imported = {"Top level": TOP_KEYS, "`stimuli`": STIMULI_KEYS, "A condition written as a mapping": CONDITION_KEYS,
                "`stimuli.render`": RENDER_KEYS, "`quality`": QUALITY_KEYS, "`recruitment`": RECRUITMENT_KEYS,
                "`recruitment.mturk`": MTURK_KEYS}
    captured = checker_tables(monkeypatch)
    for section, keys in imported.items():  # the importable tables are what the checker uses
        assert captured[section] == keys, section
    for section, keys in captured.items():
        documented = key_table(text, section)
        assert set(documented) == set(keys), (
            f"docs/study-yaml.md, '{section}': missing {sorted(set(keys) - set(documented))}, "
            f"not in the code {sorted(set(documented) - set(keys))}")
        for key, default in keys.items():
            assert_default_matches(section, key, documented[key], default)


def test_enumerations_in_the_tables_are_the_codes():
    text = read(STUDY_YAML)
    lists = {
        ("`stimuli`", "embodiments"): spec_module.EMBODIMENTS,
        ("A condition written as a mapping", "kind"): spec_module.CONDITION_KINDS,
        ("`questions`", "type"): spec_module.QUESTION_TYPES,
        ("`pages`", "type"): spec_module.PAGE_TYPES,
        ("`demographics`", "fields"): spec_module.DEMOGRAPHIC_FIELDS,
    }
    for (section, key), values in lists.items():
        row = next(r for t in tables(sections(text)[section]) for r in t if code_spans(r.get("key", "")) == [key])
        named = [v for v in code_spans(row["meaning"]) if v in values or re.fullmatch(r"[a-z_]+", v)]
        assert set(values) <= set(named), f"'{section}' `{key}`: the meaning should list {values}, it lists {named}"
        assert set(named) <= set(values), f"'{section}' `{key}`: {set(named) - set(values)} are not allowed values"


def yaml_blocks(name: str) -> list[tuple[str, str]]:
    return [(info, body) for info, body in fenced_blocks(read(name)) if info.split()[:1] == ["yaml"]]


@pytest.mark.parametrize("name", [STUDY_YAML, "concepts.md"])
def test_every_full_yaml_example_parses(name):
    blocks = yaml_blocks(name)
    full = [(info, body) for info, body in blocks if info == "yaml"]
    assert full, f"docs/{name} has no complete YAML example"
    for info, body in blocks:
        if info == "yaml":
            try:
                parse_spec(body)
            except SpecError as exc:
                pytest.fail(f"docs/{name}: an example does not parse:\n{exc}\n---\n{body}")
        elif info == "yaml fragment":
            assert yaml.safe_load(body) is not None, f"docs/{name}: a fragment is not YAML"
        else:
            assert info == "yaml invalid", f"docs/{name}: unknown block kind ```{info}"
            with pytest.raises(SpecError):
                parse_spec(body)


def worked_example() -> dict:
    body = sections(read(STUDY_YAML))["A complete example"]
    return parse_spec(next(b for info, b in fenced_blocks(body) if info == "yaml"))


def page_multiple(spec: dict, page: dict) -> int:
    qtype = spec["questions"][page["question"]]["type"]
    if qtype == "likert":
        return len(page_treatments(spec, page))
    if qtype == "pairwise":
        return len(design.pairs_of(spec, page))
    return 1


def test_design_arithmetic_of_the_worked_example():
    spec = worked_example()
    body = sections(read(STUDY_YAML))["A complete example"]
    table = next(t for t in tables(body) if t and "cells" in t[0])
    trials = [i for i, p in enumerate(spec["pages"]) if p["type"] == "trials"]
    assert [code_spans(r["page"]) for r in table[:-1]] == [[f"pages[{i}]"] for i in trials]
    multiples = []
    for row, i in zip(table, trials):
        page = spec["pages"][i]
        assert row["question"] == spec["questions"][page["question"]]["type"]
        assert int(row["treatments"]) == len(page_treatments(spec, page)), row
        multiples.append(page_multiple(spec, page))
        assert int(row["utterances must be a multiple of"]) == multiples[-1], row
        assert int(row["cells"]) == design.page_cells(spec, page), row
    study = table[-1]
    assert study["page"] == "the study"
    assert int(study["cells"]) == design.cell_count(spec)
    assert int(study["utterances must be a multiple of"]) == math.lcm(*multiples)
    balance = next(t for t in tables(body) if t and "balanced" in t[0])
    assert {r["balanced"] for r in balance} == {"yes", "no"}
    for row in balance:
        n = int(row["rated utterances"])
        assert (design.check_balance(spec, n) == []) == (row["balanced"] == "yes"), (n, design.check_balance(spec, n))
    quota = re.search(r"quota\s+of\s+(\d+)\s+fills\s+each\s+of\s+the\s+(\d+)\s+cells\s+with\s+(\d+)\s+participants", body)
    assert quota and int(quota[1]) == spec["recruitment"]["quota"] and int(quota[2]) == design.cell_count(spec)
    assert int(quota[3]) * int(quota[2]) == int(quota[1])


def test_design_rule_statements_hold():
    """The rules the 'Design rules' section states, on the variants: cells and multiples as it says."""
    text = read(STUDY_YAML)
    rules = sections(text)["Design rules"]
    assert "**multiple of k**" in rules and "**k cells**" in rules and "**2p cells**" in rules
    assert re.search(r"at\s+or below 5000", rules) and "5000 counterbalancing cells" in Path(design.__file__).read_text()
    variant = sections(text)["A pairwise page over a subset, on two embodiments"]
    spec = parse_spec(next(b for info, b in fenced_blocks(variant) if info == "yaml"))
    page = spec["pages"][0]
    said = re.search(r"\((\w+) pairs: the number of utterances must be a multiple of (\d+), and the page has (\d+)\s+cells",
                     variant)
    words = {"two": 2, "three": 3, "four": 4, "six": 6}
    assert said, "the variant's sentence about pairs and cells changed; update the test's pattern"
    assert words[said[1]] == len(design.pairs_of(spec, page)) == int(said[2])
    assert int(said[3]) == design.page_cells(spec, page) == design.cell_count(spec)
    mushra = sections(text)["A MUSHRA page with a hidden reference and an anchor"]
    spec = parse_spec(next(b for info, b in fenced_blocks(mushra) if info == "yaml"))
    assert design.check_balance(spec, 7) == [], "a slider page balances with any number of utterances"
    likert_with_no_checks_needed = spec["pages"][1]
    assert likert_with_no_checks_needed["attention_checks"] == 0
    bad = dict(spec, pages=[dict(likert_with_no_checks_needed, attention_checks=1)] + spec["pages"][2:])
    assert any("attention checks" in p for p in design.check_balance(bad, 7)), "slider pages take no attention checks"


def test_validation_message_example_is_what_load_study_prints(tmp_path, monkeypatch):
    body = sections(read(STUDY_YAML))["Validation messages"]
    blocks = fenced_blocks(body)
    invalid = next(b for info, b in blocks if info == "yaml invalid")
    printed = next(b for info, b in blocks if info == "text")
    (tmp_path / "study.yaml").write_text(invalid, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    stderr = io.StringIO()
    with pytest.raises(CommandError) as exc:
        call_command("load_study", "study.yaml", stderr=stderr, stdout=io.StringIO())
    assert stderr.getvalue().strip() == printed.strip()
    exit_line = re.search(r"exits with `([^`]+)`", body)
    assert exit_line and str(exc.value) == exit_line[1]


# ----------------------------------------------------------------------------------------- shell lines
@pytest.mark.parametrize("name", [STUDY_YAML, "concepts.md", "statistics.md", "bundle.md"])
def test_every_manage_py_line_parses_with_the_commands_own_arguments(name):
    lines = manage_calls(read(name))
    assert lines, f"docs/{name} shows no manage.py command"
    for words in lines:
        assert_parses(words, f"docs/{name}")


# ----------------------------------------------------------------------------------------- statistics.md
STATISTICS = "statistics.md"


def command_parser(name: str):
    return load_command_class(get_commands()[name], name).create_parser("manage.py", name)


def option(parser, flag: str):
    found = [a for a in parser._actions if flag in a.option_strings]
    assert found, f"`{flag}` is not an option of `manage.py {parser.prog.split()[-1]}`"
    return found[0]


def first_table_with(text: str, heading: str, column: str) -> list[dict[str, str]]:
    return next(t for t in tables(sections(text)[heading]) if t and column in t[0])


def test_statistics_options_and_defaults_are_those_of_report_and_analyze():
    text = read(STATISTICS)
    table = first_table_with(text, "Options shared by `report` and `analyze`", "option")
    for name in ("report", "analyze"):
        parser = command_parser(name)
        for row in table:
            (flag,) = code_spans(row["option"])
            action = option(parser, flag)
            if row["default"] == "—":
                assert action.default is None, (name, flag, action.default)
            else:
                assert yaml.safe_load(code_spans(row["default"])[0]) == action.default, (name, flag, action.default)


def test_statistics_corrections_are_the_choices_of_every_command():
    text = read(STATISTICS)
    table = first_table_with(text, "Multiple-comparison corrections", "`--correction`")
    listed = [code_spans(r["`--correction`"])[0] for r in table]
    from studies.analysis import inferential

    assert tuple(listed) == inferential.CORRECTIONS
    for name in ("report", "analyze", "power"):
        assert tuple(option(command_parser(name), "--correction").choices) == inferential.CORRECTIONS, name
    zero_row = next(r for r in first_table_with(text, "Options shared by `report` and `analyze`", "option")
                    if code_spans(r["option"]) == ["--zero-method"])
    zero = code_spans(zero_row["meaning"])
    assert tuple(zero) == option(command_parser("report"), "--zero-method").choices


def test_statistics_designs_and_tests_are_what_the_analysis_offers():
    text = read(STATISTICS)
    table = first_table_with(text, "Designs", "design")
    from studies.analysis import inferential, tidy

    listed = {code_spans(r["design"])[0] for r in table}
    assert listed == set(option(command_parser("analyze"), "--design").choices) == set(tidy.DESIGNS)
    tests = {"Friedman": "friedman", "Kruskal–Wallis": "kruskal", "Wilcoxon signed-rank": "wilcoxon",
             "Mann–Whitney U": "mannwhitney"}
    for row in table:
        for cell in (row["omnibus test"], row["pairwise test"]):
            if cell in tests:
                assert tests[cell] in inferential.METHODS, cell
    for row in table:  # each rating design names the omnibus and pairwise tests the code runs for it
        design_name = code_spans(row["design"])[0]
        if design_name in inferential.RATING_DESIGNS:
            within = design_name in inferential.WITHIN_DESIGNS
            assert tests[row["omnibus test"]] == ("friedman" if within else "kruskal"), design_name
            assert tests[row["pairwise test"]] == ("wilcoxon" if within else "mannwhitney"), design_name
    from studies.reporting import question_designs

    # "`report` chooses per question": likert -> within, slider with a hidden reference -> mushra, pairwise.
    said = dict(re.findall(r"`(likert|slider|pairwise)`[^`]*?→ `(\w+)`", sections(text)["Designs"]))
    assert question_designs(worked_example()) == {"naturalness": said["likert"], "fit": said["pairwise"]}
    mushra = sections(read(STUDY_YAML))["A MUSHRA page with a hidden reference and an anchor"]
    assert question_designs(parse_spec(next(b for i, b in fenced_blocks(mushra) if i == "yaml"))) == {"match": "mushra"}


def test_statistics_exclusion_order_and_settings_are_the_codes():
    text = read(STATISTICS)
    from studies.analysis import exclusions

    table = first_table_with(text, "1. Exclusions", "rule")
    assert [code_spans(r["rule"])[0] for r in table] == exclusions.RULE_ORDER
    assert [int(r["order"]) for r in table] == list(range(1, len(exclusions.RULE_ORDER) + 1))
    settings = {code_spans(r["setting"])[0] for r in table}
    assert settings == set(exclusions.DEFAULT_RULES)
    analyze = command_parser("analyze")
    for row in table:
        setting, (flag,) = code_spans(row["setting"])[0], code_spans(row["`analyze` option"])
        dest = option(analyze, flag).dest
        assert dest == setting or (setting == "bs1534" and dest == "no_bs1534"), (flag, dest, setting)
    body = sections(text)["1. Exclusions"]
    assert f"below {exclusions.BS1534_REFERENCE_MIN} in more than {exclusions.BS1534_ITEM_SHARE_PERCENT} %" in body
    assert f"above {exclusions.BS1534_ANCHOR_MAX} in more than {exclusions.BS1534_ITEM_SHARE_PERCENT} %" in body
    assert f"more than {exclusions.BS1534_ANCHOR_PANEL_PERCENT} % of the assessors" in body
    assert f"from {exclusions.STRAIGHT_LINING_MIN_RATINGS} ratings on" in body


def test_statistics_methods_versions_and_scipy_functions_are_real():
    import scipy.optimize
    import scipy.stats

    from studies.analysis import run

    text = read(STATISTICS)
    methods = first_table_with(text, "What `summary.json` records about the methods", "`methods` key")
    assert [code_spans(r["`methods` key"])[0] for r in methods] == list(run._methods(run.DEFAULT_SETTINGS))
    versions = first_table_with(text, "What `summary.json` records about the methods", "`versions` key")
    assert [code_spans(r["`versions` key"])[0] for r in versions] == list(run._versions())
    settings = re.search(r"`settings` records (.*?); `spec_sha256`", text, re.S)[1]
    assert [s for s in code_spans(settings)] == [k for k in run.DEFAULT_SETTINGS if k != "figures"]
    source = "".join(p.read_text() for p in Path(run.__file__).parent.glob("*.py"))
    named = set(re.findall(r"`scipy\.(stats|optimize)\.(\w+)`", text))
    assert named, "the doc names no scipy function"
    for module, name in named:
        assert hasattr({"stats": scipy.stats, "optimize": scipy.optimize}[module], name), name
        assert f"{module}.{name}" in source, f"the analysis does not use scipy.{module}.{name}"
    for module, name in re.findall(r"`(numpy\.random)\.(\w+)", text):
        assert f"{name}(" in source


# ----------------------------------------------------------------------------------------- bundle.md
BUNDLE = "bundle.md"


def yes_rows(table: list[dict[str, str]], first: str, column: str) -> list[str]:
    assert {r[column] for r in table} <= {"yes", "no"}, column
    return [code_spans(r[first])[0] for r in table if r[column] == "yes"]


def zip_names(path: Path, tokens: set[str]) -> set[str]:
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
    videos = {n for n in names if n.startswith("stimuli/")}
    assert videos == {f"stimuli/{t}.mp4" for t in tokens} or not videos
    return (names - videos) | ({"stimuli/<token>.mp4"} if videos else set())


def csv_header(path: Path, member: str) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        return next(csv.reader(io.StringIO(zf.read(member).decode("utf-8"))))


@pytest.mark.slow
def test_bundle_holds_every_file_and_column_the_doc_lists(demo_study, tmp_path):
    import hashlib
    import json

    from studies import bundles
    from studies.reporting import spec_sha256

    text = read(BUNDLE)
    files = first_table_with(text, "What is inside", "file")
    columns = first_table_with(text, "Manifest columns", "column")
    full, blind = tmp_path / "full.zip", tmp_path / "blind.zip"
    call_command("export_stimuli", demo_study.slug, out=str(full), stdout=io.StringIO(), stderr=io.StringIO())
    call_command("export_stimuli", demo_study.slug, out=str(blind), blind=True, stdout=io.StringIO(),
                 stderr=io.StringIO())
    key = bundles.key_path_for(blind)
    tokens = {s.token for s, _ in bundles.study_stimuli(demo_study.current_version)}

    assert zip_names(full, tokens) == set(yes_rows(files, "file", "in a bundle"))
    assert zip_names(blind, tokens) == set(yes_rows(files, "file", "in a blind bundle"))
    assert zip_names(key, tokens) == set(yes_rows(files, "file", "in the key"))

    assert csv_header(full, "manifest.csv") == yes_rows(columns, "column", "full manifest")
    assert csv_header(blind, "manifest.csv") == yes_rows(columns, "column", "blind manifest")
    assert csv_header(key, "condition_key.csv") == yes_rows(columns, "column", "key")
    mturk_columns = re.search(r"columns `([\w,]+)`", next(r for r in files if "mturk" in r["file"])["what it holds"])[1]
    assert csv_header(full, "mturk_batch.csv") == mturk_columns.split(",")
    with zipfile.ZipFile(full) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        study_yaml = zf.read("study.yaml")
        roles = {row["role"] for row in manifest["stimuli"]}
    header = {k for k in manifest if k not in ("stimuli",)}
    said = set(code_spans(next(r for r in files if r["file"] == "`manifest.json`")["what it holds"]))
    assert header <= said | {"columns"}, header - said
    assert roles <= {code_spans(r["role"])[0] for r in first_table_with(text, "Which videos are in it", "role")}
    # The citation claim: study.yaml's SHA-256 is the report's spec_sha256 of the same version.
    assert hashlib.sha256(study_yaml).hexdigest() == spec_sha256(demo_study)
    cite = " ".join(re.search(r'as `README.txt` writes them: "([^"]+)"', text)[1].split())
    with zipfile.ZipFile(full) as zf:
        readme = zf.read("README.txt").decode()
    pattern = re.escape(cite).replace("my\\-study", r"[\w-]+").replace("2026\\-03\\-01", r"\d{4}-\d\d-\d\d")
    assert re.search(re.sub(r"version\\ 2", r"version\\ \\d+", pattern), readme), readme


def test_export_responses_columns_are_the_docs(demo_study):
    from studies.selectors import EXPORT_COLUMNS

    body = sections(read(BUNDLE))["The ratings: `export_responses`"]
    listed = code_spans(body.split("The columns, in order:")[1].split("For a pairwise")[0])
    assert listed == EXPORT_COLUMNS
    out = io.StringIO()
    call_command("export_responses", demo_study.slug, stdout=out, stderr=io.StringIO())
    assert next(csv.reader(io.StringIO(out.getvalue()))) == listed
