"""The whole analysis of one data set, in a fixed order: read → exclusions → per question, item and
embodiment: summaries, omnibus and pairwise tests, robustness checks, figures → pairwise preferences →
planning. Returns the summary dict of docs/report-schema.md; `studies/reports.py` writes it out.

Pure (no Django): `manage.py report` passes a study's tidy export, `manage.py analyze` a CSV from anywhere.

Designs. `design` is one of within, between, pairwise, mushra for the whole data set, or a mapping
question → design (a study whose questions differ: a likert page within participants, a MUSHRA page, a
pairwise page). A rated block in which every participant rated a single condition is analysed as between
participants whatever was asked, and the block says so.

Exclusions run once per design among the questions (each with the rows of its questions) and a
participant excluded by any of them is left out of every block: someone who failed the attention check on
one page did not pay attention on the next either. The report lists each excluded participant once, under
the first rule of the fixed order that excluded them.
"""
from __future__ import annotations

import math
import platform
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__ as evalsite_version
from . import descriptive, exclusions, figures, inferential, power, preference, robustness, tidy
from .errors import AnalysisError

SCHEMA = "evalsite.report/1"
DEFAULT_SETTINGS = {
    "alpha": 0.05,
    "correction": "holm",
    "zero_method": "wilcox",
    "n_boot": 10_000,
    "bt_boot": 2_000,
    "seed": 0,
    "ci_level": 0.95,
    "rules": {},
    "matched": "ground_truth",
    "mismatched": None,  # None: the conditions named in `mismatched_default` that are present
    "power": None,  # {"effect_size": d, "n_participants": [...], "target": 0.8, "n_sim": 500}
    "figures": True,
}
MISMATCHED_DEFAULT = ("random_alignment", "mismatched", "random")

Progress = Callable[[str, float], None]


def _clean(value):
    """JSON-safe copy: numpy scalars to Python, NaN and ±inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _records(frame: pd.DataFrame) -> list[dict]:
    return _clean(frame.to_dict(orient="records"))


def _versions() -> dict:
    import matplotlib
    import scipy
    import statsmodels

    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "pandas": pd.__version__, "statsmodels": statsmodels.__version__, "matplotlib": matplotlib.__version__,
            "evalsite": evalsite_version}


def _methods(settings: dict) -> dict:
    m = inferential.METHODS
    return {
        "unit": m["unit"],
        "ci_bootstrap": descriptive.BOOT_METHOD,
        "ci_t": descriptive.T_METHOD,
        "friedman": m["friedman"],
        "kruskal": m["kruskal"],
        "wilcoxon": m["wilcoxon"],
        "mannwhitney": m["mannwhitney"],
        "correction": m[settings["correction"]],
        "rank_biserial": m["rank_biserial"],
        "cliffs_delta": m["cliffs_delta"],
        "cohens_d": m["cohens_d"],
        "bradley_terry": preference.BT_METHOD,
        "binomial": preference.BINOMIAL_METHOD,
        "mixed_model": robustness.MIXED_METHOD,
        "krippendorff": ("Krippendorff's alpha (Krippendorff 2011) over stimuli as units and participants as "
                         "coders, interval and ordinal metrics."),
    }


def _settings(settings: Mapping | None) -> dict:
    out = {**DEFAULT_SETTINGS, **(settings or {})}
    unknown = set(out) - set(DEFAULT_SETTINGS)
    if unknown:
        raise AnalysisError(f"unknown analysis setting(s): {', '.join(sorted(unknown))}; "
                            f"known: {', '.join(DEFAULT_SETTINGS)}")
    if out["correction"] not in inferential.CORRECTIONS:
        raise AnalysisError(f"unknown correction {out['correction']!r}; choose one of "
                            f"{', '.join(inferential.CORRECTIONS)}")
    if out["zero_method"] not in inferential.ZERO_METHODS:
        raise AnalysisError(f"unknown zero method {out['zero_method']!r}; choose one of "
                            f"{', '.join(inferential.ZERO_METHODS)}")
    if not 0 < float(out["alpha"]) < 1 or not 0 < float(out["ci_level"]) < 1:
        raise AnalysisError("alpha and ci_level must lie between 0 and 1")
    for key in ("n_boot", "bt_boot"):
        if int(out[key]) < 100:
            raise AnalysisError(f"{key} must be at least 100 bootstrap rounds, got {out[key]}")
    return out


def _designs(df: pd.DataFrame, design: str | Mapping[str, str]) -> dict[str, str]:
    """question → design."""
    questions = sorted(df["question"].astype(str).unique()) if "question" in df.columns else ["rating"]
    if isinstance(design, str):
        if design not in tidy.DESIGNS:
            raise AnalysisError(f"unknown design {design!r}; choose one of {', '.join(tidy.DESIGNS)}")
        return {q: design for q in questions}
    out = {}
    for q in questions:
        d = design.get(q)
        if d is None:
            continue  # a question the caller does not analyse (e.g. the training page's)
        if d not in tidy.DESIGNS:
            raise AnalysisError(f"unknown design {d!r} for question {q!r}; choose one of {', '.join(tidy.DESIGNS)}")
        out[q] = d
    return out


def _merge_exclusions(reports: list[dict]) -> dict:
    """One report from the per-design runs: each participant once, under the earliest rule."""
    if not reports:
        return {"rules": [], "excluded": [], "n_participants_before": 0, "n_participants_after": 0,
                "n_ratings_before": 0, "n_ratings_after": 0}
    rules = []
    for order, name in enumerate(exclusions.RULE_ORDER, start=1):
        entries = [r for rep in reports for r in rep["rules"] if r["rule"] == name]
        applied = [e for e in entries if e["applied"]]
        described = " / ".join(dict.fromkeys(e["description"] for e in (applied or entries)))
        rules.append({"rule": name, "order": order, "description": described, "applied": bool(applied)})
    first: dict[str, dict] = {}
    rank = {name: i for i, name in enumerate(exclusions.RULE_ORDER)}
    for rep in reports:
        for e in rep["excluded"]:
            old = first.get(e["participant"])
            if old is None or rank[e["rule"]] < rank[old["rule"]]:
                first[e["participant"]] = e
    return {"rules": rules, "excluded": sorted(first.values(), key=lambda e: (rank[e["rule"]], e["participant"])),
            "n_participants_before": 0, "n_participants_after": 0, "n_ratings_before": 0, "n_ratings_after": 0}


def _rated_block(rows: pd.DataFrame, *, block_id: str, key: dict, design: str, settings: dict,
                 fig_dir: Path | None, out_dir: Path | None) -> dict:
    conditions = sorted(rows["condition"].unique())
    participants_per = rows.groupby("participant")["condition"].nunique()
    notes = []
    if design != "between" and len(participants_per) and participants_per.max() == 1 and len(conditions) > 1:
        notes.append("every participant rated a single condition, so this block is analysed between participants")
        design = "between"
    summary = descriptive.summarize(rows, by=["condition"], n_boot=int(settings["n_boot"]),
                                    seed=int(settings["seed"]), level=float(settings["ci_level"]))
    summary = summary.sort_values("mean", ascending=False, kind="stable")
    order = summary["condition"].tolist()
    block = {
        "id": block_id, **key, "question_type": str(rows["question_type"].iloc[0]), "design": design,
        "scale": {"min": _clean(float(rows["scale_min"].min())), "max": _clean(float(rows["scale_max"].max()))},
        "n_ratings": int(len(rows)), "n_participants": int(rows["participant"].nunique()),
        "conditions": order, "summary": _records(summary), "notes": notes, "figures": {},
    }
    if len(conditions) < 2:
        notes.append(f"only one condition ({conditions[0]}) was rated here: there is nothing to compare")
        block.update(omnibus=None, pairwise=[], mixed_model=None,
                     reliability={"interval": None, "ordinal": None, "note": "one condition only"})
        return block
    block["omnibus"] = _clean(inferential.omnibus(rows, design=design))
    block["pairwise"] = _clean(inferential.pairwise(rows, design=design, correction=settings["correction"],
                                                     alpha=float(settings["alpha"]),
                                                     zero_method=settings["zero_method"]))
    block["mixed_model"] = _clean(robustness.mixed_model(rows))
    reliability = {level: _clean(robustness.krippendorff_alpha(rows, level=level)) for level in ("interval", "ordinal")}
    reliability["note"] = "" if any(v is not None for v in reliability.values()) else (
        "not defined: too few stimuli rated by more than one participant")
    block["reliability"] = reliability
    if fig_dir is not None:
        title = " · ".join(str(v) for v in key.values() if v)
        stem = fig_dir / block_id
        block["figures"]["significance_matrix"] = _rel(figures.significance_matrix(
            block["pairwise"], order, f"{stem}-significance", f"Significant differences: {title}"), out_dir)
        block["figures"]["box_violin"] = _rel(figures.box_violin(
            rows, order, f"{stem}-violin", title, "Rating"), out_dir)
        scale_max = rows["scale_max"].max()
        if block["question_type"] == "likert" and np.isfinite(scale_max):
            block["figures"]["likert_stacked"] = _rel(figures.likert_stacked(
                rows, order, int(scale_max), f"{stem}-likert", title), out_dir)
    return block


def _rel(paths: list[str], out_dir: Path | None) -> list[str]:
    if out_dir is None:
        return [str(p) for p in paths]
    return [Path(p).resolve().relative_to(out_dir.resolve()).as_posix() for p in paths]


def _preference_block(rows: pd.DataFrame, *, block_id: str, key: dict, settings: dict, fig_dir: Path | None,
                      out_dir: Path | None) -> dict:
    notes = []
    rates = preference.win_rates(rows)
    if rates.attrs.get("note"):
        notes.append(rates.attrs["note"])
    matrix = preference.win_matrix(rows)
    n_trials = matrix.attrs.get("n_trials", {})
    names = [str(c) for c in matrix.index]
    bt = preference.bradley_terry(rows, n_boot=int(settings["bt_boot"]), seed=int(settings["seed"]),
                                  level=float(settings["ci_level"]))
    present = set(rows["pair_a"]) | set(rows["pair_b"])
    matched = settings["matched"]
    mismatched = settings["mismatched"]
    if mismatched is None:
        mismatched = [c for c in MISMATCHED_DEFAULT if c in present]
    else:
        mismatched = [c for c in mismatched if c in present]
    mvm = None
    if matched in present and mismatched:
        mvm = {"matched": matched, "mismatched": list(mismatched),
               **_clean(preference.matched_vs_mismatched(rows, matched=matched, mismatched=list(mismatched)))}
    block = {
        "id": block_id, **key, "n_choices": int(len(rows)), "n_participants": int(rows["participant"].nunique()),
        "win_rates": _records(rates),
        "win_matrix": {"conditions": names,
                       "share": _clean([[matrix.loc[r, c] for c in names] for r in names]),
                       "n": [[int(n_trials.get(r, {}).get(c, 0)) for c in names] for r in names]},
        "bradley_terry": _records(bt), "bradley_terry_note": str(bt.attrs.get("note", "")),
        "matched_vs_mismatched": mvm, "notes": notes, "figures": {},
    }
    if fig_dir is not None and len(bt):
        title = " · ".join(str(v) for v in key.values() if v)
        block["figures"]["bradley_terry"] = _rel(figures.bradley_terry_plot(
            bt, fig_dir / f"{block_id}-bradley-terry", title=f"Bradley–Terry scores: {title}"), out_dir)
    return block


def run_analysis(df: pd.DataFrame, *, design: str | Mapping[str, str], settings: Mapping | None = None,
                 out_dir: str | Path | None = None, title: str = "", source: Mapping | None = None,
                 spec_sha256: str | None = None, snapshot_at: str | None = None,
                 objective_metrics: list | None = None, progress: Progress | None = None) -> dict:
    """The summary of docs/report-schema.md for the tidy frame `df`. Figures go to `out_dir/figures` when
    `out_dir` is given (and settings["figures"] is true); paths in the summary are relative to `out_dir`.
    Raises AnalysisError for input the researcher must fix; degenerate data give messages, not errors."""
    cfg = _settings(settings)
    say = progress or (lambda stage, fraction: None)
    out_path = Path(out_dir) if out_dir is not None else None
    fig_dir = out_path / "figures" if (out_path is not None and cfg["figures"]) else None
    if fig_dir is not None:
        fig_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    summary = {
        "schema": SCHEMA, "title": title, "source": dict(source or {}), "spec_sha256": spec_sha256,
        "snapshot_at": snapshot_at or now, "generated_at": now,
        "design": design if isinstance(design, str) else "per-question",
        "settings": _clean({k: v for k, v in cfg.items() if k != "figures"}), "versions": _versions(),
        "methods": _methods(cfg), "input": {"rows": int(len(df)), "participants": 0, "dropped": []},
        "exclusions": _merge_exclusions([]), "messages": [], "blocks": [], "items": [], "preference": [],
        "objective_metrics": _clean(list(objective_metrics or [])), "power": None,
    }
    messages = summary["messages"]
    if df is None or len(df) == 0:
        messages.append({"level": "error", "text": "There are no ratings to analyse yet (the study has no "
                                                   "responses, or the file has no data rows)."})
        return summary
    if "question" not in df.columns:
        df = df.assign(question="rating")
    designs = _designs(df, design)
    if not designs:
        messages.append({"level": "error", "text": "None of the questions in the data has a design to analyse."})
        return summary
    say("exclusions", 0.05)
    kept_parts, reports, dropped, participants = [], [], [], set()
    for d in sorted(set(designs.values())):
        questions = [q for q, qd in designs.items() if qd == d]
        subset = df[df["question"].astype(str).isin(questions)]
        kept, report = exclusions.apply_exclusions(subset, design=d, rules=cfg["rules"])
        dropped += kept.attrs.get("dropped", [])
        participants |= set(subset["participant"].astype(str).str.strip()) - {""}
        kept_parts.append(kept.assign(_design=d))
        reports.append(report)
    merged = _merge_exclusions(reports)
    gone = {e["participant"] for e in merged["excluded"]}
    frame = pd.concat(kept_parts, ignore_index=True) if kept_parts else pd.DataFrame()
    rated_all = sum(r["n_ratings_before"] for r in reports)
    frame = frame[~frame["participant"].isin(list(gone))].reset_index(drop=True)
    merged.update(n_participants_before=len(participants),
                  n_participants_after=int(frame["participant"].nunique()) if len(frame) else 0,
                  n_ratings_before=int(rated_all), n_ratings_after=int(len(frame)))
    summary["exclusions"] = merged
    summary["input"].update(participants=len(participants), dropped=_clean(dropped))
    if len(frame) == 0:
        messages.append({"level": "error", "text": "No ratings are left after the exclusions, so nothing can be "
                                                   "tested; see the exclusions above."})
        return summary

    # rated questions: one block per question × item × embodiment
    rated = frame[frame["_design"] != "pairwise"]
    keys = ["question", "item", "embodiment"]
    groups = list(rated.groupby(keys, sort=True)) if len(rated) else []
    for i, ((question, item, embodiment), rows) in enumerate(groups, start=1):
        say(f"question {question} {item}".strip(), 0.1 + 0.6 * (i - 1) / max(len(groups), 1))
        block = _rated_block(rows, block_id=f"b{i}", key={"question": question, "item": item,
                                                            "embodiment": embodiment},
                             design=str(rows["_design"].iloc[0]), settings=cfg, fig_dir=fig_dir, out_dir=out_path)
        all_conditions = set(df.loc[df["question"].astype(str) == question, "condition"].astype(str)) - {""}
        missing = sorted(all_conditions - set(rows["condition"]) - _check_conditions(df))
        if missing:
            messages.append({"level": "warning", "text": f"{question}{' / ' + item if item else ''}: no ratings "
                             f"left for {', '.join(missing)} after exclusions; "
                             f"{'it is' if len(missing) == 1 else 'they are'} not in the tests."})
        if len(block["conditions"]) < 2:
            messages.append({"level": "warning", "text": f"{question}{' / ' + item if item else ''}: only one "
                             "condition, so no test could be run."})
        summary["blocks"].append(block)

    # per-item breakdown for questions with several items
    for (question, embodiment), rows in (rated.groupby(["question", "embodiment"], sort=True) if len(rated) else []):
        if rows["item"].nunique() < 2:
            continue
        table = descriptive.summarize(rows, by=["item", "condition"], n_boot=int(cfg["n_boot"]),
                                      seed=int(cfg["seed"]), level=float(cfg["ci_level"]))
        entry = {"question": question, "embodiment": embodiment, "summary": _records(table), "figures": {}}
        if fig_dir is not None:
            entry["figures"]["per_item"] = _rel(figures.per_item(
                table, fig_dir / f"items-{_slug(question)}-{_slug(embodiment)}", f"{question}: per item"), out_path)
        summary["items"].append(entry)

    # pairwise-preference questions
    say("pairwise preferences", 0.75)
    pairs = frame[frame["_design"] == "pairwise"]
    for i, ((question, embodiment), rows) in enumerate(
            (pairs.groupby(["question", "embodiment"], sort=True) if len(pairs) else []), start=1):
        summary["preference"].append(_preference_block(
            rows, block_id=f"p{i}", key={"question": question, "embodiment": embodiment}, settings=cfg,
            fig_dir=fig_dir, out_dir=out_path))

    if cfg["power"]:
        say("power", 0.9)
        summary["power"] = _power(cfg, summary, fig_dir, out_path)
    say("done", 1.0)
    return summary


def _check_conditions(df: pd.DataFrame) -> set:
    """Conditions seen only on check trials (attention checks, catch trials): never expected in the tests."""
    if "check" not in df.columns and "trial_kind" not in df.columns:
        return set()
    check = df.get("check", pd.Series("", index=df.index)).fillna("").astype(str).ne("")
    check |= df.get("trial_kind", pd.Series("rated", index=df.index)).fillna("rated").astype(str).ne("rated")
    return set(df.loc[check, "condition"].astype(str)) - set(df.loc[~check, "condition"].astype(str))


def _slug(text) -> str:
    return "".join(c if c.isalnum() else "-" for c in str(text)).strip("-") or "all"


def _power(cfg: dict, summary: dict, fig_dir: Path | None, out_dir: Path | None) -> dict:
    plan = dict(cfg["power"])
    block = summary["blocks"][0] if summary["blocks"] else None
    plan.setdefault("design", block["design"] if block and block["design"] != "mushra" else "within")
    plan.setdefault("conditions", len(block["conditions"]) if block else 2)
    plan.setdefault("n_participants", [10, 20, 30, 40, 60, 80, 100])
    plan.setdefault("alpha", cfg["alpha"])
    plan.setdefault("correction", cfg["correction"])
    plan.setdefault("seed", cfg["seed"])
    if "effect_size" not in plan:
        raise AnalysisError("power planning needs an expected effect_size (in residual SDs)")
    result = _clean(power.simulate_power(**plan))
    result["plan"] = _clean(plan)
    result["figures"] = {}
    if fig_dir is not None:
        result["figures"]["power_curve"] = _rel(figures.power_curve(result, fig_dir / "power"), out_dir)
    return result
