"""Which participants the analysis leaves out, by fixed rules applied in a fixed, reported order.

Rules run in `RULE_ORDER`; a participant excluded by one rule is not tested by the later ones, so each
excluded participant is listed once, under the first rule that excluded them. Every threshold is inclusive
for the participant: a value exactly at a threshold keeps them. The rules, with `DEFAULT_RULES` keys
(None = rule off):

1. attention_check (max_attention_failures): an attention-check trial (check == "attention") is failed when
   an answer differs from `expected`, the number the video asked for (counted per trial: a trial with two
   items answered wrong is one failure). Checks without an expected number (HEMVIP's rating pages keep it in
   the page config) are not judged, and the description says how many.
2. catch_trial (max_catch_failures): a catch trial (check == "catch", a deliberate lip-sync mismatch shown as
   a rated video) is failed when rated above the scale midpoint (scale_min + scale_max) / 2. For a pairwise
   catch trial the catch side is the condition of the pair that appears only in catch trials, never in an
   ordinary pair (in the platform's export, `condition` of a pairwise row is the chosen side, so it cannot
   name the catch); the trial is failed when that side was chosen (a tie is not a failure). A pair where
   neither or both sides are such conditions cannot be judged and is counted in the description.
3. min_watch (min_watch_fraction): any rated row whose video was watched less than the fraction.
4. speed (min_median_answer_ms): the median answer time over the participant's rated rows is below it.
5. straight_lining (max_identical_fraction): one value makes up more than the fraction of the participant's
   rated likert answers (only with at least 5 of them).
6-7. ITU-R BS.1534-3 (2015), section 4.1.2 post-screening, mushra design only, when `bs1534` is true:
   bs1534_reference excludes an assessor who rates the hidden reference below 90 in more than 15 % of the
   items they rated it in; bs1534_anchor one who rates the anchor above 90 in more than 15 % of the items
   they rated it in, except that items where more than 25 % of the assessors rated the anchor above 90 do
   not count against anyone. An item is one stimulus material: the same question, item, utterance and
   embodiment (for webMUSHRA files, the trial). "All assessors" are those still included when the BS.1534
   screening starts, and both BS.1534 rules judge the same panel. Several anchors in one item (webMUSHRA's
   anchor35 and anchor70) count as above 90 when any of them is.

`apply_exclusions` returns the rated rows of the kept participants (trial_kind "rated", check rows
removed) and a report of every rule (with its thresholds, and whether it could be applied) and every
exclusion (with the numbers). The platform's own `excluded` flag is carried along but not used.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import AnalysisError
from .tidy import normalise

DEFAULT_RULES = {
    "max_attention_failures": 0,
    "max_catch_failures": 0,
    "min_watch_fraction": None,
    "min_median_answer_ms": None,
    "max_identical_fraction": None,
    "bs1534": True,
}
RULE_ORDER = ["attention_check", "catch_trial", "min_watch", "speed", "straight_lining", "bs1534_reference",
              "bs1534_anchor"]

BS1534_REFERENCE_MIN = 90
BS1534_ANCHOR_MAX = 90
BS1534_ITEM_SHARE_PERCENT = 15
BS1534_ANCHOR_PANEL_PERCENT = 25
STRAIGHT_LINING_MIN_RATINGS = 5
_EPS = 1e-9


def _check_rules(rules: dict | None) -> dict:
    if rules is not None and not isinstance(rules, dict):
        raise AnalysisError("exclusion rules must be a mapping of rule settings, e.g. {'min_watch_fraction': 0.9}")
    rules = dict(rules or {})
    unknown = sorted(set(rules) - set(DEFAULT_RULES))
    if unknown:
        raise AnalysisError(f"unknown exclusion setting(s) {', '.join(unknown)}: use {', '.join(DEFAULT_RULES)}")
    cfg = {**DEFAULT_RULES, **rules}
    limits = {
        "max_attention_failures": (0, None, True), "max_catch_failures": (0, None, True),
        "min_watch_fraction": (0, 1, False), "min_median_answer_ms": (0, None, False),
        "max_identical_fraction": (0, 1, False),
    }
    for key, (low, high, integer) in limits.items():
        value = cfg[key]
        if value is None:
            continue
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        ok = ok and np.isfinite(value) and value >= low and (high is None or value <= high)
        ok = ok and (not integer or float(value).is_integer())
        if not ok:
            span = f"a whole number ≥ {low}" if integer else (f"a number from {low} to {high}" if high is not None
                                                              else f"a number ≥ {low}")
            raise AnalysisError(f"exclusion setting {key} = {value!r} must be {span}, or None to switch the rule off")
        cfg[key] = int(value) if integer else float(value)
    if not isinstance(cfg["bs1534"], (bool, np.bool_)):
        raise AnalysisError(f"exclusion setting bs1534 = {cfg['bs1534']!r} must be true or false")
    cfg["bs1534"] = bool(cfg["bs1534"])
    return cfg


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _per_trial_failures(rows: pd.DataFrame, failed: np.ndarray) -> pd.DataFrame:
    """Per participant: trials judged and trials failed (a trial fails when any of its rows does)."""
    trials = pd.DataFrame({"participant": rows["participant"].to_numpy(),
                           "trial": rows["trial_position"].to_numpy(), "failed": failed})
    per_trial = trials.groupby(["participant", "trial"], sort=False)["failed"].any()
    return per_trial.groupby(level=0).agg(["size", "sum"]).rename(columns={"size": "trials", "sum": "failed"})


def _attention(frame: pd.DataFrame, cfg: dict, ctx: dict) -> tuple[str, bool, dict]:
    limit = cfg["max_attention_failures"]
    rule = (f"Attention checks: a participant is excluded after more than {_plural(limit or 0, 'wrong answer')} "
            "(an answer that differs from the number the video asked for).")
    if limit is None:
        return "Attention checks: off.", False, {}
    rows = frame[frame["check"].eq("attention")]
    if rows.empty:
        return rule + " Not applied: the data have no attention-check rows.", False, {}
    judged = rows[rows["expected"].notna()]
    note = (f" {_plural(len(rows) - len(judged), 'attention-check row')} without an expected answer "
            "were not judged." if len(judged) < len(rows) else "")
    if judged.empty:
        return rule + " Not applied: no attention check has an expected answer." + note, False, {}
    failed = ~(judged["value"].to_numpy() == judged["expected"].to_numpy())
    counts = _per_trial_failures(judged, failed)
    wrong = judged[failed]
    out = {}
    for participant, row in counts[counts["failed"] > limit].iterrows():
        mine = wrong[wrong["participant"] == participant]
        shown = dict.fromkeys(  # one entry per trial and answer (a check's items give the same one each)
            f"trial {t}: expected {e:g}, answered {'nothing' if np.isnan(v) else f'{v:g}'}"
            for t, e, v in zip(mine["trial_position"], mine["expected"], mine["value"]))
        details = "; ".join(list(shown)[:3])
        out[participant] = (f"answered {row['failed']} of {row['trials']} attention checks wrong ({details}); "
                            f"{limit} allowed")
    return rule + note, True, out


def _catch_conditions(frame: pd.DataFrame) -> set:
    pairs = frame[frame["question_type"].eq("pairwise")]
    catch = pairs["check"].eq("catch")
    in_catch = set(pairs.loc[catch, "pair_a"]) | set(pairs.loc[catch, "pair_b"])
    elsewhere = set(pairs.loc[~catch, "pair_a"]) | set(pairs.loc[~catch, "pair_b"])
    return in_catch - elsewhere


def _catch(frame: pd.DataFrame, cfg: dict, ctx: dict) -> tuple[str, bool, dict]:
    limit = cfg["max_catch_failures"]
    rule = (f"Catch trials (a lip-sync mismatch shown as a rated video): a participant is excluded after more "
            f"than {_plural(limit or 0, 'failed catch trial')}; a rating fails when above the scale midpoint "
            "(scale_min + scale_max) / 2, a pairwise catch when the mismatched side (the condition that appears "
            "only in catch pairs) was chosen.")
    if limit is None:
        return "Catch trials: off.", False, {}
    rows = frame[frame["check"].eq("catch") & frame["trial_kind"].eq("rated")]
    if rows.empty:
        return rule + " Not applied: the data have no catch-trial rows.", False, {}
    pair = rows["question_type"].eq("pairwise").to_numpy()
    midpoint = ((rows["scale_min"] + rows["scale_max"]) / 2).to_numpy()
    value = rows["value"].to_numpy()
    catch_conditions = ctx["catch_conditions"]
    a_catch = rows["pair_a"].isin(catch_conditions).to_numpy()
    b_catch = rows["pair_b"].isin(catch_conditions).to_numpy()
    catch_side = np.where(a_catch & ~b_catch, "A", np.where(b_catch & ~a_catch, "B", ""))
    judged = np.where(pair, catch_side != "", ~np.isnan(midpoint) & ~np.isnan(value))
    failed = np.where(pair, rows["choice"].to_numpy() == catch_side, value > midpoint + _EPS)
    note = (f" {_plural(int((~judged).sum()), 'catch row')} could not be judged (no scale, no value, or no "
            "single mismatched side)." if not judged.all() else "")
    if not judged.any():
        return rule + " Not applied: no catch trial could be judged." + note, False, {}
    rows, failed, pair = rows[judged], failed[judged], pair[judged]
    counts = _per_trial_failures(rows, failed)
    out = {}
    for participant, row in counts[counts["failed"] > limit].iterrows():
        how = ("preferred the mismatched video" if pair[rows["participant"].to_numpy() == participant].all()
               else "rated the mismatched video above the scale midpoint")
        out[participant] = f"{how} in {row['failed']} of {row['trials']} catch trials; {limit} allowed"
    return rule + note, True, out


def _min_watch(frame: pd.DataFrame, cfg: dict, ctx: dict) -> tuple[str, bool, dict]:
    limit = cfg["min_watch_fraction"]
    if limit is None:
        return "Minimum watching: off.", False, {}
    rule = (f"Minimum watching: a participant is excluded if any rated video was watched less than {limit:.0%} "
            "of the way.")
    rows = frame[frame["trial_kind"].eq("rated") & frame["watched_fraction"].notna()]
    if rows.empty:
        return rule + " Not applied: the data have no watched_fraction.", False, {}
    short = rows[rows["watched_fraction"].to_numpy() < limit - _EPS]
    stats = short.groupby("participant").agg(trials=("trial_position", "nunique"), least=("watched_fraction", "min"))
    out = {p: (f"{_plural(int(r['trials']), 'rated trial')} with a video watched less than {limit:.0%} "
               f"(least watched: {r['least']:.0%})") for p, r in stats.iterrows()}
    return rule, True, out


def _speed(frame: pd.DataFrame, cfg: dict, ctx: dict) -> tuple[str, bool, dict]:
    limit = cfg["min_median_answer_ms"]
    if limit is None:
        return "Speeding: off.", False, {}
    rule = f"Speeding: a participant is excluded if their median answer time on rated trials is below {limit:g} ms."
    rows = frame[frame["trial_kind"].eq("rated") & frame["answer_ms"].notna()]
    if rows.empty:
        return rule + " Not applied: the data have no answer times (answer_ms).", False, {}
    median = rows.groupby("participant")["answer_ms"].median()
    fast = median[median < limit]
    return rule, True, {p: f"median answer time {m:.0f} ms is below {limit:g} ms" for p, m in fast.items()}


def _straight_lining(frame: pd.DataFrame, cfg: dict, ctx: dict) -> tuple[str, bool, dict]:
    limit = cfg["max_identical_fraction"]
    if limit is None:
        return "Straight-lining: off.", False, {}
    rule = (f"Straight-lining: a participant is excluded if one value makes up more than {limit:.0%} of their "
            f"rated likert answers (only with at least {STRAIGHT_LINING_MIN_RATINGS} of them).")
    rows = frame[frame["trial_kind"].eq("rated") & frame["question_type"].eq("likert") & frame["value"].notna()]
    if rows.empty:
        return rule + " Not applied: the data have no likert ratings.", False, {}
    counts = rows.groupby(["participant", "value"]).size()
    n = counts.groupby(level=0).sum()
    top = counts.groupby(level=0).max()
    # The most used value (the lowest of equally common ones), for the reason.
    most = counts[counts.eq(top.reindex(counts.index.get_level_values(0)).to_numpy())].reset_index()
    most = most.groupby("participant")["value"].min()
    flagged = n.index[(n >= STRAIGHT_LINING_MIN_RATINGS) & (top > limit * n + _EPS)]
    out = {p: (f"{top[p] / n[p]:.0%} of {n[p]} likert ratings ({top[p]}) were the same value ({most[p]:g}); "
               f"at most {limit:.0%} allowed") for p in flagged}
    return rule, True, out


def _bs1534_items(frame: pd.DataFrame, role: str) -> pd.DataFrame:
    rows = frame[frame["trial_kind"].eq("rated") & frame["check"].eq("") & frame["role"].eq(role)]
    item = rows["question"] + "\x1f" + rows["item"] + "\x1f" + rows["utterance"] + "\x1f" + rows["embodiment"]
    return pd.DataFrame({"participant": rows["participant"].to_numpy(), "item": item.to_numpy(),
                         "value": rows["value"].to_numpy()})


def _bs1534_off(cfg: dict, ctx: dict) -> str | None:
    if ctx["design"] != "mushra":
        return "only for the mushra design"
    if not cfg["bs1534"]:
        return "off"
    return None


def _bs1534_reference(frame: pd.DataFrame, cfg: dict, ctx: dict) -> tuple[str, bool, dict]:
    ctx["bs1534_panel"] = frame  # both BS.1534 rules judge the panel as it stands here
    rule = (f"ITU-R BS.1534-3 post-screening (hidden reference): an assessor is excluded who rates the hidden "
            f"reference below {BS1534_REFERENCE_MIN} in more than {BS1534_ITEM_SHARE_PERCENT}% of the items "
            "they rated it in (item = question, item, utterance and embodiment; the trial for webMUSHRA files).")
    off = _bs1534_off(cfg, ctx)
    if off:
        return f"ITU-R BS.1534-3 post-screening (hidden reference): {off}.", False, {}
    ratings = _bs1534_items(frame, "hidden_reference")
    if ratings.empty:
        return rule + " Not applied: the data have no hidden-reference ratings (role hidden_reference).", False, {}
    per_item = ratings.groupby(["participant", "item"])["value"].min().lt(BS1534_REFERENCE_MIN)
    stats = per_item.groupby(level=0).agg(["size", "sum"])
    bad = stats[stats["sum"] * 100 > BS1534_ITEM_SHARE_PERCENT * stats["size"]]
    out = {p: (f"rated the hidden reference below {BS1534_REFERENCE_MIN} in {r['sum']} of {r['size']} items "
               f"({r['sum'] / r['size']:.0%}, more than {BS1534_ITEM_SHARE_PERCENT}%)") for p, r in bad.iterrows()}
    return rule, True, out


def _bs1534_anchor(frame: pd.DataFrame, cfg: dict, ctx: dict) -> tuple[str, bool, dict]:
    rule = (f"ITU-R BS.1534-3 post-screening (anchor): an assessor is excluded who rates the anchor above "
            f"{BS1534_ANCHOR_MAX} in more than {BS1534_ITEM_SHARE_PERCENT}% of the items they rated it in; items "
            f"where more than {BS1534_ANCHOR_PANEL_PERCENT}% of all assessors (those still included when the "
            f"BS.1534 screening starts) rated the anchor above {BS1534_ANCHOR_MAX} do not count against anyone.")
    off = _bs1534_off(cfg, ctx)
    if off:
        return f"ITU-R BS.1534-3 post-screening (anchor): {off}.", False, {}
    panel = _bs1534_items(ctx["bs1534_panel"], "anchor")
    if panel.empty:
        return rule + " Not applied: the data have no anchor ratings (role anchor).", False, {}
    high_panel = panel.groupby(["participant", "item"])["value"].max().gt(BS1534_ANCHOR_MAX)
    per_item = high_panel.groupby(level=1).agg(["size", "sum"])
    exempt = set(per_item.index[per_item["sum"] * 100 > BS1534_ANCHOR_PANEL_PERCENT * per_item["size"]])
    remaining = set(frame["participant"])
    high = high_panel[high_panel.index.get_level_values(0).isin(remaining)]
    counted = high & ~high.index.get_level_values(1).isin(exempt)
    stats = pd.DataFrame({"items": high.groupby(level=0).size(), "high": counted.groupby(level=0).sum(),
                          "exempt": (high & ~counted).groupby(level=0).sum()})
    bad = stats[stats["high"] * 100 > BS1534_ITEM_SHARE_PERCENT * stats["items"]]
    note = (f" {_plural(len(exempt), 'item')} had the anchor above {BS1534_ANCHOR_MAX} from more than "
            f"{BS1534_ANCHOR_PANEL_PERCENT}% of assessors and did not count." if exempt else "")
    out = {}
    for p, r in bad.iterrows():
        extra = (f"; {_plural(int(r['exempt']), 'more item')} not counted (more than "
                 f"{BS1534_ANCHOR_PANEL_PERCENT}% of assessors did the same)" if r["exempt"] else "")
        out[p] = (f"rated the anchor above {BS1534_ANCHOR_MAX} in {int(r['high'])} of {int(r['items'])} items "
                  f"({r['high'] / r['items']:.0%}, more than {BS1534_ITEM_SHARE_PERCENT}%){extra}")
    return rule + note, True, out


_RULES = {
    "attention_check": _attention, "catch_trial": _catch, "min_watch": _min_watch, "speed": _speed,
    "straight_lining": _straight_lining, "bs1534_reference": _bs1534_reference, "bs1534_anchor": _bs1534_anchor,
}


def apply_exclusions(df: pd.DataFrame, *, design: str, rules: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Apply the rules in RULE_ORDER; return (the kept rated rows, the report).

    The frame kept holds rows with trial_kind "rated" and no check, of participants no rule excluded. The
    report: {"rules": [{"rule", "order", "description", "applied"}], "excluded": [{"participant", "rule",
    "reason"}], "n_participants_before", "n_participants_after", "n_ratings_before", "n_ratings_after"}, where
    the counts are of rated rows and of the participants who have any.
    """
    cfg = _check_rules(rules)
    frame = normalise(df, design=design)
    ctx = {"design": design, "catch_conditions": _catch_conditions(frame)}
    rated = frame["trial_kind"].eq("rated") & frame["check"].eq("")
    remaining = frame
    report_rules, excluded = [], []
    for order, name in enumerate(RULE_ORDER, start=1):
        description, applied, failures = _RULES[name](remaining, cfg, ctx)
        report_rules.append({"rule": name, "order": order, "description": description, "applied": bool(applied)})
        for participant in sorted(failures):
            excluded.append({"participant": str(participant), "rule": name, "reason": failures[participant]})
        if failures:
            remaining = remaining[~remaining["participant"].isin(list(failures))]
    gone = {e["participant"] for e in excluded}
    kept = frame[rated & ~frame["participant"].isin(list(gone))].reset_index(drop=True)
    kept.attrs = dict(frame.attrs)
    report = {
        "rules": report_rules,
        "excluded": excluded,
        "n_participants_before": int(frame.loc[rated, "participant"].nunique()),
        "n_participants_after": int(kept["participant"].nunique()),
        "n_ratings_before": int(rated.sum()),
        "n_ratings_after": int(len(kept)),
    }
    return kept, report
