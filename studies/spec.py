"""The study specification: a plain YAML file of pages and questions, with defaults for everything.

`parse_spec(text)` returns the normalised spec (a dict of plain JSON types, every default filled in) or
raises SpecError naming the line, the key and how to fix it. The YAML text itself is what a StudyVersion
stores, so `load_study FILE` / `dump_study SLUG` round-trip byte for byte.

`reference()` renders every key with its default (printed by `manage.py load_study --reference`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

PAGE_TYPES = ("consent", "instructions", "av_check", "training", "trials", "demographics", "completion")
QUESTION_TYPES = ("likert", "slider", "pairwise")
EMBODIMENTS = ("avatar", "robot_sim", "robot_physical")
DEMOGRAPHIC_FIELDS = ("age", "gender", "native_language", "country", "hearing", "vision", "prior_experience")
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,79}\Z")  # \Z: `$` would let a trailing newline through
KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}\Z")
CONDITION_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,79}\Z")
TITLE_MAX = 200  # the study's title column
MAX_DEPTH = 50  # lists and mappings inside each other; a study needs about six
MAX_VALUES = 50_000  # values in the file with its aliases expanded; a study needs a few hundred

DEFAULT_CONSENT = (
    "You are invited to take part in a research study on how people perceive animated faces. "
    "You will watch short videos with sound and rate them. Taking part is voluntary; you may stop "
    "at any time. Your answers are stored without your name."
)
DEFAULT_INSTRUCTIONS = (
    "Each page shows a short video of a talking face. Watch it to the end with the sound on; the "
    "answer buttons unlock when the video has finished. Then answer the question about it."
)


@dataclass
class SpecProblem:
    path: str
    message: str
    fix: str
    line: int | None = None

    def __str__(self):
        where = f"line {self.line}, " if self.line else ""
        return f"{where}{self.path or '(top level)'}: {self.message}. Fix: {self.fix}"


class SpecError(ValueError):
    def __init__(self, problems: list[SpecProblem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def _too_complex(mark, message: str, fix: str) -> SpecError:
    return SpecError([SpecProblem("", message, fix, mark.line + 1)])


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting deeper than MAX_DEPTH before its (recursive) composer goes there."""

    def __init__(self, stream):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _too_complex(self.peek_event().start_mark, f"lists and mappings are nested more than {MAX_DEPTH} deep",
                                   "check the indentation and the brackets; a study needs only a few levels")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _load(text: str):
    """The YAML document as plain data, and each key path ('pages[2].question') mapped to its 1-based line."""
    loader = _SpecLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, {}
        lines = _line_index(root)
        return loader.construct_document(root), lines
    finally:
        loader.dispose()


def _line_index(root) -> dict[str, int]:
    """Map each key path to its line, walking the composed document with its aliases expanded.

    Refuses a document holding more than MAX_VALUES values once expanded (a "billion laughs" bomb is a few
    lines of anchors that expand to billions of values) before anything expands it further."""
    lines: dict[str, int] = {}
    stack = [(root, "", 1)]  # depth first, in document order
    values = 0
    while stack:
        node, path, depth = stack.pop()
        values += 1
        if values > MAX_VALUES or depth > MAX_DEPTH:
            raise _too_complex(node.start_mark, f"the file holds more than {MAX_VALUES} values, or nests more than "
                               f"{MAX_DEPTH} deep, once its aliases (`*name`) are expanded",
                               "write the repeated parts out instead of nesting aliases of aliases")
        lines.setdefault(path, node.start_mark.line + 1)
        children = []
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"  # a list as a key is refused later
                child = f"{path}.{key}" if path else key
                lines[child] = key_node.start_mark.line + 1
                children.append((value_node, child, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            children = [(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(node.value)]
        stack.extend(reversed(children))
    return lines


def _paths_with_nul(value, path="") -> list[str]:
    """The key paths whose key or text holds a NUL character (a database text column cannot store one)."""
    if isinstance(value, str):
        return [path] if "\x00" in value else []
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            found += ([child] if "\x00" in str(key) else []) + _paths_with_nul(item, child)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths_with_nul(item, f"{path}[{i}]")
    return found


class _Checker:
    """Collects every problem in one pass so the researcher can fix them all at once."""

    def __init__(self, lines):
        self.lines = lines
        self.problems: list[SpecProblem] = []

    def fail(self, path, message, fix):
        """Record a problem at the line of `path`, or of the nearest enclosing key when `path` is missing."""
        line, probe = self.lines.get(path), path
        while line is None and probe:
            parent = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", probe)
            probe = "" if parent == probe else parent  # a missing top-level key has no enclosing line
            line = self.lines.get(probe) if probe else None
        self.problems.append(SpecProblem(path, message, fix, line))

    def mapping(self, value, path, allowed: dict):
        """Check a mapping's keys against `allowed` (key -> default) and return it with defaults filled."""
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.fail(path, f"expected a mapping of keys, got {type(value).__name__}", "write `key: value` lines")
            return dict(allowed)
        out = {}
        for key in value:
            if key not in allowed:
                close = [k for k in allowed if str(key) and k.startswith(str(key)[:3])]
                hint = f"did you mean `{close[0]}`?" if close else f"allowed keys: {', '.join(allowed)}"
                self.fail(f"{path}.{key}" if path else str(key), f"unknown key `{key}`", hint)
        for key, default in allowed.items():
            out[key] = value.get(key, default)
        return out

    def number(self, value, path, low, high, integer=False):
        ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type:
            kind = "a whole number" if integer else "a number"
            self.fail(path, f"expected {kind}, got {value!r}", f"write {kind} between {low} and {high}")
            return low
        if not (low <= value <= high):
            self.fail(path, f"{value} is out of range", f"use a value between {low} and {high}")
        return value

    def text(self, value, path, required=False):
        if value is None and not required:
            return None
        if not isinstance(value, str) or (required and not value.strip()):
            self.fail(path, f"expected text, got {value!r}", "write the text in quotes or as a `|` block")
            return ""
        return value

    def boolean(self, value, path):
        if not isinstance(value, bool):
            self.fail(path, f"expected true or false, got {value!r}", "write `true` or `false`")
            return False
        return value

    def string_list(self, value, path, *, choices=None, min_len=0, pattern=None):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(path, f"expected a list of names, got {value!r}", "write `[a, b, c]` or one `- name` per line")
            return []
        if len(value) < min_len:
            self.fail(path, f"needs at least {min_len} entries", f"list {min_len} or more")
        for i, item in enumerate(value):
            if choices and item not in choices:
                self.fail(f"{path}[{i}]", f"`{item}` is not one of {', '.join(choices)}", "pick one of those")
            if pattern and not pattern.match(item):
                self.fail(f"{path}[{i}]", f"`{item}` is not a valid name", "use lower-case letters, digits, - or _")
        if len(set(value)) != len(value):
            self.fail(path, "lists a name twice", "list each name once")
        return value


def _check_conditions(c: _Checker, raw) -> tuple[list[str], dict]:
    """Condition names, and the definitions of those written as mappings ({name: {kind, params}})."""
    path = "stimuli.conditions"
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        c.fail(path, "no conditions are listed", "list condition names, e.g. `[ground_truth, random_alignment, still]`")
        return [], {}
    names, definitions = [], {}
    for i, item in enumerate(raw):
        where = f"{path}[{i}]"
        if isinstance(item, str):
            if not CONDITION_RE.match(item):
                c.fail(where, f"`{item}` is not a valid name", "use lower-case letters, digits, - or _")
            names.append(item)
            continue
        if not isinstance(item, dict):
            c.fail(where, f"expected a name or a mapping, got {item!r}",
                   "write a name, or `{name: joint, kind: model, model: demo-joint}`")
            continue
        entry = c.mapping(item, where, CONDITION_KEYS)
        name, kind = entry["name"], entry["kind"]
        if not isinstance(name, str) or not CONDITION_RE.match(name):
            c.fail(f"{where}.name", f"condition name {name!r} is missing or not valid",
                   "use lower-case letters, digits, - or _")
            continue
        if kind not in CONDITION_KINDS:
            c.fail(f"{where}.kind", f"condition kind {kind!r} is not known", f"use one of {', '.join(CONDITION_KINDS)}")
            continue
        params = {}
        if kind == "time_shift":
            if entry["ms"] is None:
                c.fail(f"{where}.ms", "a time_shift condition needs its shift", "write `ms: 400` (positive: motion late)")
            else:
                params["ms"] = c.number(entry["ms"], f"{where}.ms", -5000, 5000)
            if c.boolean(entry["catch"], f"{where}.catch"):  # a lip-sync catch trial: rated low by anyone watching
                if isinstance(params["ms"], (int, float)) and abs(params["ms"]) < 400:
                    c.fail(f"{where}.ms", f"a catch trial's shift of {params['ms']:g} ms is too small to notice",
                           "shift by at least 400 ms (either way)")
                params["catch"] = True
        elif entry["catch"] not in (False, None):
            c.fail(f"{where}.catch", f"`catch` applies to a time_shift condition, not to {kind}",
                   "make it `{name: NAME, kind: time_shift, ms: 600, catch: true}`, or remove `catch`")
        if kind == "model":
            if not isinstance(entry["model"], str) or not entry["model"]:
                c.fail(f"{where}.model", "a model condition needs the trained model's name",
                       "write `model: NAME` (see `manage.py train` and the /models/ page)")
            else:
                params["model"] = entry["model"]
            if entry["temperature"] is not None:
                params["temperature"] = c.number(entry["temperature"], f"{where}.temperature", 0, 5)
        if entry["seed"] is not None:
            params["seed"] = c.number(entry["seed"], f"{where}.seed", 0, 2**31 - 1, integer=True)
        for key in ("ms", "model", "temperature"):
            if entry[key] is not None and key not in params and not (kind == "model" and key == "model"):
                c.fail(f"{where}.{key}", f"`{key}` does not apply to a {kind} condition", f"remove `{key}`")
        names.append(name)
        description = c.text(entry["description"], f"{where}.description") or ""
        definitions[name] = {"kind": kind, "params": params, "description": description}
    if len(set(names)) != len(names):
        c.fail(path, "lists a condition twice", "list each condition once")
    return names, definitions


def _check_render(c: _Checker, raw) -> dict:
    """How the study's stimuli are rendered: size, frame rate, background, framing, lighting, and which
    avatar (the built-in one, or a custom avatar's YAML) and robot inverse model."""
    render = c.mapping(raw, "stimuli.render", RENDER_KEYS)
    for key in ("width", "height"):
        render[key] = c.number(render[key], f"stimuli.render.{key}", 64, 2048, integer=True)
        if isinstance(render[key], int) and render[key] % 2:
            c.fail(f"stimuli.render.{key}", f"{key} {render[key]} is odd", "use an even number (H.264 yuv420p needs it)")
    render["fps"] = c.number(render["fps"], "stimuli.render.fps", 10, 60)
    background = render["background"]
    if not (isinstance(background, list) and len(background) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in background)):
        c.fail("stimuli.render.background", f"expected three whole numbers 0-255 (sRGB red, green, blue), got "
               f"{background!r}", "write e.g. `[226, 231, 238]`")
    if render["framing"] not in ("head", "head_and_shoulders"):
        c.fail("stimuli.render.framing", f"framing {render['framing']!r} is not known", "use head or head_and_shoulders")
    if render["robot_model"] is not None and not isinstance(render["robot_model"], str):
        c.fail("stimuli.render.robot_model", "expected the name of a trained inverse model",
               "write `robot_model: NAME` (manage.py train --model inverse), or leave it out for the newest")
    if render["avatar"] is not None and not (isinstance(render["avatar"], str) and render["avatar"].strip()):
        c.fail("stimuli.render.avatar", "expected the path of a custom avatar's YAML file",
               "write `avatar: avatars/my-head/avatar.yaml` (relative to MEDIA_ROOT, or absolute; docs/avatar.md), "
               "or leave it out for the built-in avatar")
    if render["lighting"] not in ("studio", "flat"):
        c.fail("stimuli.render.lighting", f"lighting {render['lighting']!r} is not known", "use studio or flat")
    return render


def _check_question(c: _Checker, key: str, raw) -> dict:
    path = f"questions.{key}"
    base = {"type": None, "prompt": None}
    qtype = raw.get("type") if isinstance(raw, dict) else None
    if qtype not in QUESTION_TYPES:
        c.fail(f"{path}.type", f"question type {qtype!r} is not known", f"use one of {', '.join(QUESTION_TYPES)}")
        return {"type": "likert", "prompt": "", "items": [], "points": 5, "labels": ["", ""]}
    if qtype == "likert":
        allowed = {**base, "points": 5, "labels": ["Very poor", "Very good"], "items": None}
    elif qtype == "slider":
        allowed = {
            **base,
            "labels": ["Bad", "Poor", "Fair", "Good", "Excellent"],
            "reference": None,
            "hidden_reference": None,
            "anchor": None,
            "items": None,
        }
    else:
        allowed = {**base, "allow_tie": False, "strength": False, "items": None}
    q = c.mapping(raw, path, allowed)
    q["prompt"] = c.text(q["prompt"], f"{path}.prompt", required=True)
    items = q["items"]
    if items is None:
        items = [{"key": "overall", "text": q["prompt"]}]
    if not isinstance(items, list) or not items:
        c.fail(f"{path}.items", "expected a list of items", "write `- {key: upper, text: ...}` per item")
        items = []
    clean_items = []
    for i, item in enumerate(items):
        ipath = f"{path}.items[{i}]"
        item = c.mapping(item, ipath, {"key": None, "text": None})
        if not isinstance(item["key"], str) or not KEY_RE.match(item["key"]):
            c.fail(f"{ipath}.key", f"item key {item['key']!r} is not valid", "use a short lower-case key like `upper`")
        item["text"] = c.text(item["text"], f"{ipath}.text", required=True)
        clean_items.append(item)
    keys = [i["key"] for i in clean_items if isinstance(i["key"], str)]
    if len(set(keys)) != len(keys):
        c.fail(f"{path}.items", "two items share a key", "give each item its own key")
    q["items"] = clean_items
    if qtype == "likert":
        q["points"] = c.number(q["points"], f"{path}.points", 2, 11, integer=True)
        labels = q["labels"]
        if not isinstance(labels, list) or len(labels) not in (2, q["points"]) or not all(
            isinstance(x, str) for x in labels
        ):
            c.fail(f"{path}.labels", "expected the two end labels, or one label per point",
                   f"write `[lowest, highest]` or {q['points']} labels")
            q["labels"] = ["", ""]
    elif qtype == "slider":
        if not isinstance(q["labels"], list) or not all(isinstance(x, str) for x in q["labels"]):
            c.fail(f"{path}.labels", "expected a list of band labels (bottom to top)", "e.g. [Bad, Poor, Fair, Good, Excellent]")
        for role in ("reference", "hidden_reference", "anchor"):
            if q[role] is not None and not isinstance(q[role], str):
                c.fail(f"{path}.{role}", "expected a condition name", "write the name of one of the study's conditions")
        if q["reference"] is not None and q["hidden_reference"] not in (None, q["reference"]):
            c.fail(f"{path}.hidden_reference", "the hidden reference must be the same condition as the reference",
                   f"set it to `{q['reference']}` or leave it out")
    else:
        q["allow_tie"] = c.boolean(q["allow_tie"], f"{path}.allow_tie")
        q["strength"] = c.boolean(q["strength"], f"{path}.strength")
    return q


def _check_page(c: _Checker, i: int, raw, questions: dict) -> dict:
    path = f"pages[{i}]"
    ptype = raw.get("type") if isinstance(raw, dict) else None
    if ptype not in PAGE_TYPES:
        c.fail(f"{path}.type", f"page type {ptype!r} is not known", f"use one of {', '.join(PAGE_TYPES)}")
        return {"type": "instructions", "text": ""}
    allowed = {"type": None, "title": None}
    if ptype == "consent":
        allowed |= {"text": DEFAULT_CONSENT, "agree_label": "I agree to take part"}
    elif ptype == "instructions":
        allowed |= {"text": DEFAULT_INSTRUCTIONS}
    elif ptype == "av_check":
        allowed |= {"text": "Play the clip and type the digits you hear.", "max_attempts": 2}
    elif ptype == "training":
        allowed |= {"question": None, "count": 1, "text": "A practice trial. Its answer is not used.",
                    "conditions": None, "embodiments": None}
    elif ptype == "trials":
        allowed |= {"question": None, "attention_checks": 1, "text": None, "conditions": None, "embodiments": None,
                    "utterances": None}
    elif ptype == "demographics":
        allowed |= {"fields": ["age", "gender", "native_language"], "required": False}
    elif ptype == "completion":
        allowed |= {"text": "Thank you! Your answers have been saved."}
    page = c.mapping(raw, path, allowed)
    if page.get("title") is not None:
        c.text(page["title"], f"{path}.title")
    for key in ("text", "agree_label"):
        if key in page and page[key] is not None:
            c.text(page[key], f"{path}.{key}")
    if ptype in ("training", "trials"):
        if not isinstance(page["question"], str) or page["question"] not in questions:
            c.fail(f"{path}.question", f"question {page['question']!r} is not defined",
                   f"define it under `questions:` or use one of {', '.join(questions) or '(none defined)'}")
        for key in ("conditions", "embodiments"):  # a subset of the study's, checked against them later
            if page[key] is not None:
                page[key] = c.string_list(page[key], f"{path}.{key}", min_len=1)
    if ptype == "training":
        page["count"] = c.number(page["count"], f"{path}.count", 1, 20, integer=True)
    if ptype == "trials":
        page["attention_checks"] = c.number(page["attention_checks"], f"{path}.attention_checks", 0, 20, integer=True)
        if page["utterances"] is not None:  # how many of the study's utterances this page rates (rotated)
            page["utterances"] = c.number(page["utterances"], f"{path}.utterances", 1, 100000, integer=True)
    if ptype == "av_check":
        page["max_attempts"] = c.number(page["max_attempts"], f"{path}.max_attempts", 1, 5, integer=True)
    if ptype == "demographics":
        page["fields"] = c.string_list(page["fields"], f"{path}.fields", choices=DEMOGRAPHIC_FIELDS)
        page["required"] = c.boolean(page["required"], f"{path}.required")
    return page


TOP_KEYS = {
    "slug": None,
    "title": None,
    "description": "",
    "stimuli": None,
    "questions": None,
    "pages": None,
    "quality": None,
    "recruitment": None,
}
STIMULI_KEYS = {"corpus": None, "conditions": None, "embodiments": ["avatar"], "utterances": "all",
                "allow_placeholders": False, "render": None}
# A condition may be written as a mapping that defines it (render_study creates it); the names of the
# recipes that need nothing more may be used bare.
CONDITION_KINDS = ("ground_truth", "random_alignment", "time_shift", "still", "model", "uploaded")
BUILT_IN_CONDITIONS = ("ground_truth", "random_alignment", "still")
CONDITION_KEYS = {"name": None, "kind": None, "ms": None, "model": None, "temperature": None, "seed": None,
                  "catch": False, "description": ""}
RENDER_KEYS = {"width": 512, "height": 512, "fps": 25, "background": [226, 231, 238], "framing": "head",
               "lighting": "studio", "robot_model": None, "avatar": None}
QUALITY_KEYS = {
    "min_watch_fraction": 0.95,
    "min_median_answer_ms": 1000,
    "max_identical_fraction": 0.9,
    "max_attention_failures": 0,
}
RECRUITMENT_KEYS = {
    "quota": 20,
    "abandon_after_minutes": 45,
    "reward_usd": 2.0,
    "estimated_minutes": 10,
    "mturk": None,
    "prolific": None,
}
MTURK_KEYS = {
    "title": None,
    "description": "Watch short videos of talking faces and rate them.",
    "keywords": "video, rating, faces, perception",
    "assignment_duration_minutes": 60,
    "lifetime_hours": 72,
    "auto_approval_hours": 72,
    "min_approval_rate": 95,
    "min_approved_hits": 100,
    "locales": ["US", "GB", "CA", "AU", "IE", "NZ"],
}


def parse_spec(text: str) -> dict:
    """Parse and validate a study YAML; return the normalised spec or raise SpecError."""
    try:
        raw, lines = _load(text)
    except yaml.reader.ReaderError as exc:  # a control character: it has a position, not a mark
        line = text.count("\n", 0, exc.position) + 1
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        raise SpecError([SpecProblem("", f"the file contains a character YAML does not allow ({char})",
                                     "delete it (it may be invisible: retype the line)", line)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([SpecProblem("", f"the file is not valid YAML ({problem})",
                                     "check the indentation and the colons on that line", line)]) from None
    c = _Checker(lines)
    if not isinstance(raw, dict):
        raise SpecError([SpecProblem("", "the file must be a mapping with `slug`, `title`, `stimuli`, "
                                         "`questions` and `pages`", "start from `manage.py load_study --example`", 1)])
    for path in _paths_with_nul(raw):
        c.fail(path, "the text holds a NUL character (`\\0`)", "remove it")
    spec = c.mapping(raw, "", TOP_KEYS)
    if not isinstance(spec["slug"], str) or not SLUG_RE.match(spec["slug"]):
        c.fail("slug", f"slug {spec['slug']!r} is missing or not valid",
               "use 2-80 lower-case letters, digits and dashes, e.g. `face-naturalness-2026`")
    spec["title"] = c.text(spec["title"], "title", required=True)
    if len(spec["title"]) > TITLE_MAX:
        c.fail("title", f"the title is {len(spec['title'])} characters long", f"shorten it to {TITLE_MAX} characters at most")
    c.text(spec["description"], "description")

    stim = c.mapping(spec["stimuli"], "stimuli", STIMULI_KEYS)
    if not isinstance(stim["corpus"], str) or not stim["corpus"]:
        c.fail("stimuli.corpus", "the corpus is missing", "name an imported corpus, e.g. `corpus: demo`")
    stim["conditions"], stim["condition_definitions"] = _check_conditions(c, stim["conditions"])
    stim["render"] = _check_render(c, stim["render"])
    stim["embodiments"] = c.string_list(stim["embodiments"], "stimuli.embodiments", choices=EMBODIMENTS, min_len=1)
    if stim["utterances"] != "all":
        stim["utterances"] = c.string_list(stim["utterances"], "stimuli.utterances", min_len=1)
    stim["allow_placeholders"] = c.boolean(stim["allow_placeholders"], "stimuli.allow_placeholders")
    spec["stimuli"] = stim

    questions_raw = spec["questions"]
    questions = {}
    if not isinstance(questions_raw, dict) or not questions_raw:
        c.fail("questions", "no questions are defined", "add `questions:` with at least one likert, slider or pairwise question")
    else:
        for key, qraw in questions_raw.items():
            if not isinstance(key, str) or not KEY_RE.match(key):
                c.fail(f"questions.{key}", f"question key {key!r} is not valid", "use a short lower-case key like `naturalness`")
            questions[str(key)] = _check_question(c, str(key), qraw)
    for key, q in questions.items():
        if q["type"] == "slider":
            for role in ("reference", "hidden_reference", "anchor"):
                if isinstance(q.get(role), str) and q[role] not in stim["conditions"]:
                    c.fail(f"questions.{key}.{role}", f"`{q[role]}` is not one of the study's conditions",
                           "add it to `stimuli.conditions` or use one listed there")
        if q["type"] == "pairwise" and len(stim["conditions"]) * len(stim["embodiments"]) < 2:
            c.fail(f"questions.{key}", "a pairwise question needs at least two conditions", "list two or more conditions")
    spec["questions"] = questions

    pages_raw = spec["pages"]
    pages = []
    if not isinstance(pages_raw, list) or not pages_raw:
        c.fail("pages", "no pages are listed", "list pages such as consent, instructions, trials, completion")
    else:
        pages = [_check_page(c, i, p, questions) for i, p in enumerate(pages_raw)]
        types = [p["type"] for p in pages]
        if "trials" not in types:
            c.fail("pages", "there is no `trials` page", "add `- {type: trials, question: <key>}`")
        if types.count("completion") != 1 or types[-1] != "completion":
            c.fail("pages", "the last page must be the one `completion` page", "end the list with `- type: completion`")
        if "consent" in types and types[0] != "consent":
            c.fail("pages[0]", "consent must be the first page", "move the consent page to the top")
        for i, page in enumerate(pages):
            _check_page_subset(c, i, page, stim, questions)
    spec["pages"] = pages

    quality = c.mapping(spec["quality"], "quality", QUALITY_KEYS)
    quality["min_watch_fraction"] = c.number(quality["min_watch_fraction"], "quality.min_watch_fraction", 0.0, 1.0)
    quality["min_median_answer_ms"] = c.number(quality["min_median_answer_ms"], "quality.min_median_answer_ms", 0, 600000)
    quality["max_identical_fraction"] = c.number(quality["max_identical_fraction"], "quality.max_identical_fraction", 0.0, 1.0)
    quality["max_attention_failures"] = c.number(quality["max_attention_failures"], "quality.max_attention_failures", 0, 100, integer=True)
    spec["quality"] = quality

    rec = c.mapping(spec["recruitment"], "recruitment", RECRUITMENT_KEYS)
    rec["quota"] = c.number(rec["quota"], "recruitment.quota", 1, 100000, integer=True)
    rec["abandon_after_minutes"] = c.number(rec["abandon_after_minutes"], "recruitment.abandon_after_minutes", 1, 10080)
    rec["reward_usd"] = c.number(rec["reward_usd"], "recruitment.reward_usd", 0.0, 1000.0)
    rec["estimated_minutes"] = c.number(rec["estimated_minutes"], "recruitment.estimated_minutes", 1, 600)
    mturk = c.mapping(rec["mturk"], "recruitment.mturk", MTURK_KEYS)
    if mturk["title"] is None:
        mturk["title"] = spec["title"] if isinstance(spec["title"], str) else ""
    for key in ("title", "description", "keywords"):
        c.text(mturk[key], f"recruitment.mturk.{key}")
    mturk["min_approval_rate"] = c.number(mturk["min_approval_rate"], "recruitment.mturk.min_approval_rate", 0, 100, integer=True)
    mturk["min_approved_hits"] = c.number(mturk["min_approved_hits"], "recruitment.mturk.min_approved_hits", 0, 10**7, integer=True)
    mturk["assignment_duration_minutes"] = c.number(mturk["assignment_duration_minutes"], "recruitment.mturk.assignment_duration_minutes", 1, 10080)
    mturk["lifetime_hours"] = c.number(mturk["lifetime_hours"], "recruitment.mturk.lifetime_hours", 1, 8760)
    mturk["auto_approval_hours"] = c.number(mturk["auto_approval_hours"], "recruitment.mturk.auto_approval_hours", 1, 720)
    mturk["locales"] = c.string_list(mturk["locales"], "recruitment.mturk.locales")
    rec["mturk"] = mturk
    rec["prolific"] = c.mapping(rec["prolific"], "recruitment.prolific", {})
    spec["recruitment"] = rec

    if c.problems:
        raise SpecError(c.problems)
    return spec


def _check_page_subset(c: _Checker, i: int, page: dict, stim: dict, questions: dict) -> None:
    """A trials or training page's own `conditions` / `embodiments` must be some of the study's."""
    path = f"pages[{i}]"
    for key, listed in (("conditions", stim["conditions"]), ("embodiments", stim["embodiments"])):
        chosen = page.get(key)
        if not isinstance(chosen, list) or not isinstance(listed, list):
            continue
        unknown = [x for x in chosen if x not in listed]
        if unknown:
            c.fail(f"{path}.{key}", f"{', '.join(map(repr, unknown))} {'is' if len(unknown) == 1 else 'are'} not "
                   f"among the study's {key}", f"use some of {', '.join(map(str, listed))}, or leave `{key}` out "
                   "to use them all")
        elif len(set(chosen)) != len(chosen):
            c.fail(f"{path}.{key}", f"a name is listed twice in {chosen}", "list each once")
    question = questions.get(page.get("question")) if isinstance(page.get("question"), str) else None
    if question is None or c.problems:
        return
    cells = page_treatments({"stimuli": stim}, page)
    if question["type"] == "pairwise" and len(cells) < 2:
        c.fail(path, "this page's pairwise question has fewer than two condition x embodiment treatments to pair",
               "list at least two conditions (or embodiments) for this page")
    if question["type"] == "slider" and page.get("conditions") is not None:
        for role in ("reference", "hidden_reference", "anchor"):
            if isinstance(question.get(role), str) and question[role] not in page["conditions"]:
                c.fail(f"{path}.conditions", f"the question's {role} `{question[role]}` is not among this page's "
                       "conditions", f"add `{question[role]}` to the page's conditions")


def treatments(spec: dict) -> list[tuple[str, str]]:
    """The study's factor levels: condition x embodiment, in a stable order."""
    return [(cond, emb) for emb in spec["stimuli"]["embodiments"] for cond in spec["stimuli"]["conditions"]]


def page_treatments(spec: dict, page: dict) -> list[tuple[str, str]]:
    """The treatments a trials or training page shows: the study's, narrowed by the page's own `conditions`
    and `embodiments` when it lists them (in the study's order)."""
    conditions, embodiments = page.get("conditions"), page.get("embodiments")
    return [(cond, emb) for cond, emb in treatments(spec)
            if (conditions is None or cond in conditions) and (embodiments is None or emb in embodiments)]


def reference() -> str:
    """Every key of a study YAML with its default, for `load_study --reference` and the docs."""
    out = ["# Study YAML reference: every key and its default (null = required or derived)."]

    def block(title, keys, indent=""):
        out.append(f"{indent}{title}:")
        for key, default in keys.items():  # in YAML's spelling: null, false, [a, b]
            shown = yaml.safe_dump(default, default_flow_style=True, width=10**6).strip()
            out.append(f"{indent}  {key}: {shown.removesuffix(chr(10) + '...').strip()}")

    out.append("slug: required, 2-80 lower-case letters, digits and dashes")
    out.append("title: required")
    out.append("description: ''")
    block("stimuli", {k: v for k, v in STIMULI_KEYS.items() if k != "render"})
    out.append("  # conditions: names (ground_truth, random_alignment, still need nothing more) or definitions:")
    out.append("  #   - {name: joint, kind: model, model: demo-joint}          # a trained model's output")
    out.append("  #   - {name: glow-t07, kind: model, model: demo-glow, temperature: 0.7, seed: 1}")
    out.append("  #   - {name: lipsync-catch, kind: time_shift, ms: 500}      # motion 500 ms late")
    out.append(f"  # kinds: {', '.join(CONDITION_KINDS)}")
    block("render", RENDER_KEYS, indent="  ")
    out.append("questions:   # a mapping of question key -> question")
    out.append("  <key>: {type: likert, prompt: required, points: 5, labels: [Very poor, Very good], items: [{key, text}]}")
    out.append("  <key>: {type: slider, prompt: required, labels: [Bad, Poor, Fair, Good, Excellent], reference: null,"
               " hidden_reference: null, anchor: null, items: null}")
    out.append("  <key>: {type: pairwise, prompt: required, allow_tie: false, strength: false, items: null}")
    out.append(f"pages:   # a list; types: {', '.join(PAGE_TYPES)}; the last page is the completion page")
    out.append("  - {type: consent, text: <default consent text>, agree_label: I agree to take part}")
    out.append("  - {type: instructions, text: <default instructions>}")
    out.append("  - {type: av_check, text: Play the clip and type the digits you hear., max_attempts: 2}")
    out.append("  - {type: training, question: required, count: 1, conditions: null, embodiments: null}")
    out.append("  - {type: trials, question: required, attention_checks: 1, text: null, conditions: null,"
               " embodiments: null, utterances: null}  # conditions/embodiments: a subset of the study's (null ="
               " all); utterances: how many of the study's utterances each participant rates here (null = all)")
    out.append(f"  - {{type: demographics, fields: [age, gender, native_language], required: false}}  # fields from {', '.join(DEMOGRAPHIC_FIELDS)}")
    out.append("  - {type: completion, text: Thank you! Your answers have been saved.}")
    block("quality", QUALITY_KEYS)
    block("recruitment", {k: v for k, v in RECRUITMENT_KEYS.items() if k not in ("mturk", "prolific")})
    block("mturk", MTURK_KEYS, indent="  ")
    return "\n".join(out) + "\n"
