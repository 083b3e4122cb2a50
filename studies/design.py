"""Balanced assignment of trials to a participant: pure functions over the normalised spec.

A participant belongs to one counterbalancing *cell*. For each `trials` page:
- likert: a Latin square over utterance x treatment (treatment = condition x embodiment): in cell r,
  utterance i is shown as treatment (i + r) mod k, so every participant sees each utterance once and each
  treatment equally often (m utterances, m a multiple of k), and over k cells every utterance appears in
  every treatment equally often;
- slider (MUSHRA style): one trial per utterance with every treatment side by side; screen positions are
  rotated by (r + i) mod k, so each treatment takes each position equally often; a question with an open
  `reference` adds, after the k rated slots, that condition once per embodiment of the page, unrated (role
  `reference`), which the page shows labelled as the reference;
- pairwise: a Latin square over utterance x pair, with the left/right order flipped in half the cells.
A page may narrow the treatments to some of the study's conditions and embodiments (its own `conditions`
and `embodiments`), e.g. a pairwise page over three conditions of a six-condition study, and may rate only
`utterances: n` of the study's m utterances: cell c takes the window of n consecutive utterances starting at
((c // square cells) mod w) * n, where w = m / gcd(m, n), so over w windows every utterance is rated equally
often and within each window the square above applies.
Trial order within a page is shuffled with the participant's seed; attention checks are put at seeded
positions (never first). The study's cell count is the least common multiple of its pages' cell counts.
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field

from .spec import page_treatments

Treatment = tuple[str, str]  # (condition, embodiment)


class DesignError(ValueError):
    pass


@dataclass(frozen=True)
class PlannedSlot:
    utterance: str
    condition: str
    embodiment: str
    role: str = "test"


@dataclass
class PlannedTrial:
    page_index: int
    kind: str  # training | rated | attention
    question: str
    slots: list[PlannedSlot] = field(default_factory=list)


def pairs_of(spec: dict, page: dict) -> list[tuple[Treatment, Treatment]]:
    return list(itertools.combinations(page_treatments(spec, page), 2))


def _square_cells(spec: dict, page: dict) -> int:
    """Cells of the page's Latin square (or slider position rotation) over one window of utterances."""
    qtype = spec["questions"][page["question"]]["type"]
    if qtype in ("likert", "slider"):
        return len(page_treatments(spec, page))
    return 2 * len(pairs_of(spec, page))


def _windows(page: dict, m: int) -> int:
    """How many windows of `utterances` consecutive utterances a page rotates through, so that over them
    every one of the study's m utterances is rated equally often (1 when the page rates them all)."""
    n = page.get("utterances")
    return 1 if not n or n >= m else m // math.gcd(m, n)


def page_cells(spec: dict, page: dict) -> int:
    m = len(spec["stimuli"].get("resolved_utterances") or ())
    return _square_cells(spec, page) * _windows(page, m)


def cell_count(spec: dict) -> int:
    counts = [page_cells(spec, p) for p in spec["pages"] if p["type"] == "trials"]
    return math.lcm(*counts) if counts else 1


def check_balance(spec: dict, n_utterances: int) -> list[str]:
    """Problems that make a balanced design impossible with this many utterances (empty when fine)."""
    problems = []
    for i, page in enumerate(spec["pages"]):
        if page["type"] != "trials":
            continue
        k = len(page_treatments(spec, page))
        qtype = spec["questions"][page["question"]]["type"]
        per_page = page.get("utterances")
        if per_page and per_page > n_utterances:
            problems.append(f"pages[{i}]: the page rates {per_page} utterances but the study lists {n_utterances}; "
                            f"set pages[{i}].utterances to {n_utterances} or fewer, or list more utterances")
        n_rated = per_page if per_page and per_page <= n_utterances else n_utterances
        where = f"pages[{i}].utterances" if per_page else "stimuli.utterances"
        if qtype == "likert" and n_rated % k:
            problems.append(
                f"pages[{i}]: a likert page needs the number of utterances ({n_rated}) to be a multiple of "
                f"the {k} condition x embodiment treatments; list {n_rated - n_rated % k or k} utterances "
                f"({where})"
            )
        if qtype == "pairwise":
            p = len(pairs_of(spec, page))
            if n_rated % p:
                problems.append(
                    f"pages[{i}]: a pairwise page needs the number of utterances ({n_rated}) to be a "
                    f"multiple of the {p} pairs; list {n_rated - n_rated % p or p} utterances ({where})"
                )
        if page["attention_checks"] and qtype != "likert":
            problems.append(f"pages[{i}]: attention checks are shown with a likert question; set "
                            f"attention_checks: 0 on this {qtype} page, or add them to a likert page")
    if cell_count(spec) > 5000:
        problems.append("the design has more than 5000 counterbalancing cells; use fewer conditions or pages")
    return problems


def _roles(question: dict, condition: str) -> str:
    if question["type"] != "slider":
        return "test"
    if question.get("hidden_reference") == condition:
        return "hidden_reference"
    if question.get("anchor") == condition:
        return "anchor"
    return "test"


def _slider_slots(question: dict, utterance: str, order: list[Treatment],
                  shown: list[Treatment]) -> list[PlannedSlot]:
    """A slider trial's slots: the rated treatments in screen order, then the open reference (if the question
    names one) on each of the page's embodiments, in the page's order; it is shown, never rated."""
    slots = [PlannedSlot(utterance, c, e, _roles(question, c)) for c, e in order]
    reference = question.get("reference")
    if reference:
        slots += [PlannedSlot(utterance, c, e, "reference") for c, e in shown if c == reference]
    return slots


def plan_trials(
    spec: dict,
    *,
    utterances: list[str],
    training_utterances: list[str],
    attention_stimuli: list[tuple[str, str, str]],
    cell: int,
    seed: int,
) -> list[PlannedTrial]:
    """Every trial of one participant, in presentation order.

    utterances: the study's rated utterances, sorted; training_utterances: those usable for practice;
    attention_stimuli: (utterance, condition, embodiment) of clips with a known answer (attention checks).
    """
    rng = random.Random(seed)
    plan: list[PlannedTrial] = []
    for page_index, page in enumerate(spec["pages"]):
        if page["type"] == "training":
            question = spec["questions"][page["question"]]
            k_treat = page_treatments(spec, page)
            pool = training_utterances or utterances
            for _ in range(page["count"]):
                utt = rng.choice(pool)
                if question["type"] == "likert":
                    chosen = [k_treat[0]]
                elif question["type"] == "slider":
                    chosen = list(k_treat)
                    rng.shuffle(chosen)
                else:
                    chosen = list(rng.choice(pairs_of(spec, page)))
                slots = (_slider_slots(question, utt, chosen, k_treat) if question["type"] == "slider"
                         else [PlannedSlot(utt, c, e) for c, e in chosen])
                plan.append(PlannedTrial(page_index, "training", page["question"], slots))
        elif page["type"] == "trials":
            plan.extend(_plan_page(spec, page_index, page, utterances, attention_stimuli, cell, rng))
    return plan


def _plan_page(spec, page_index, page, utterances, attention_stimuli, cell, rng) -> list[PlannedTrial]:
    question = spec["questions"][page["question"]]
    k_treat = page_treatments(spec, page)
    k = len(k_treat)
    square = _square_cells(spec, page)
    r = cell % square
    m, n = len(utterances), page.get("utterances")
    if n and n < m:  # this cell's window of n consecutive utterances; the windows rotate over the cells
        start = ((cell // square) % _windows(page, m)) * n
        utterances = [utterances[(start + j) % m] for j in range(n)]
    trials: list[PlannedTrial] = []
    if question["type"] == "likert":
        for i, utt in enumerate(utterances):
            cond, emb = k_treat[(i + r) % k]
            trials.append(PlannedTrial(page_index, "rated", page["question"], [PlannedSlot(utt, cond, emb)]))
    elif question["type"] == "slider":
        for i, utt in enumerate(utterances):
            shift = (r + i) % k
            order = k_treat[shift:] + k_treat[:shift]
            slots = _slider_slots(question, utt, order, k_treat)
            trials.append(PlannedTrial(page_index, "rated", page["question"], slots))
    else:
        pairs = pairs_of(spec, page)
        n_pairs = len(pairs)
        flip_cell = r // n_pairs
        for i, utt in enumerate(utterances):
            a, b = pairs[(i + r) % n_pairs]
            if (flip_cell + i) % 2:
                a, b = b, a
            trials.append(PlannedTrial(page_index, "rated", page["question"],
                                       [PlannedSlot(utt, *a), PlannedSlot(utt, *b)]))
    rng.shuffle(trials)
    n_checks = page["attention_checks"]
    if n_checks:
        if not attention_stimuli:
            raise DesignError("the study asks for attention checks but the corpus has no attention-check clips")
        embodiments = page.get("embodiments")
        pool = sorted(a for a in attention_stimuli if embodiments is None or a[2] in embodiments) \
            or sorted(attention_stimuli)
        rng.shuffle(pool)
        for j in range(n_checks):
            utt, cond, emb = pool[j % len(pool)]  # distinct clips while there are enough
            at = rng.randint(1, len(trials))  # never first: the participant should be settled in
            trials.insert(at, PlannedTrial(page_index, "attention", page["question"], [PlannedSlot(utt, cond, emb)]))
    return trials
