"""The report writer: a hand-built summary (two rated blocks, a preference section, an exclusion, a
warning, a p-value that could not be computed) becomes summary.json, CSV tables, an escaped standalone HTML
page and a PDF; the same summary gives the same bytes; degenerate summaries still give every file; a dict
that is not a report summary is refused."""
from __future__ import annotations

import csv
import html
import json
import math

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from studies.reports import format_ci, format_p, write_report

NASTY = "<b>x</b>"


def _figure(out_dir, stem):
    """A tiny real PNG + SVG pair under out_dir/figures; returns their paths relative to out_dir."""
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(2, 1.5), dpi=50)
    FigureCanvasAgg(fig)
    fig.add_subplot().bar(["a", "b"], [1, 2])
    paths = []
    for ext in ("png", "svg"):
        metadata = {"Software": None} if ext == "png" else {"Date": None}
        fig.savefig(out_dir / "figures" / f"{stem}.{ext}", metadata=metadata)
        paths.append(f"figures/{stem}.{ext}")
    return paths


def _row(condition, mean, n=12):
    return {"condition": condition, "n_ratings": n * 3, "n_participants": n, "mean": mean, "median": round(mean),
            "sd": 1.1, "ci_boot_low": mean - 0.3, "ci_boot_high": mean + 0.3, "ci_t_low": mean - 0.35,
            "ci_t_high": mean + 0.35}


def _pair(a, b, p, p_adj, note="", **extra):
    return {"a": a, "b": b, "test": "wilcoxon", "n": 12, "n_a": 12, "n_b": 12, "statistic": 5.0, "p": p,
            "p_adj": p_adj, "significant": None if p_adj is None else p_adj < 0.05, "mean_a": 5.0, "mean_b": 4.0,
            "direction": "a", "rank_biserial": 0.61, "cliffs_delta": 0.4, "cohens_d": 0.9, "note": note, **extra}


def _block(block_id, question, figures):
    return {
        "id": block_id, "question": question, "item": "", "embodiment": "avatar", "question_type": "likert",
        "design": "within", "scale": {"min": 1, "max": 7}, "n_ratings": 108, "n_participants": 12,
        "conditions": ["ground_truth", NASTY, "still"],
        "summary": [_row("ground_truth", np.float64(5.4321)), _row(NASTY, 4.1), _row("still", 2.0)],
        "omnibus": {"test": "friedman", "statistic": 8.765, "df": 2, "p": 0.0123, "n_participants": 12, "note": ""},
        "pairwise": [
            _pair("ground_truth", NASTY, 0.0002, 0.0004),
            _pair("ground_truth", "still", 0.03, 0.06),
            _pair(NASTY, "still", None, None, note="All 12 participant(s) gave the same mean rating.",
                  statistic=float("nan"), rank_biserial=None, cohens_d=float("inf")),
        ],
        "mixed_model": {"formula": "rating ~ C(condition) + (1 | participant)", "method": "REML", "n": 108,
                        "converged": True,
                        "fixed": [{"term": "Intercept", "estimate": 5.43, "se": 0.2, "z": 27.1, "p": 1e-9,
                                   "ci_low": 5.0, "ci_high": 5.8},
                                  {"term": "C(condition)[T.still]", "estimate": -3.4, "se": 0.25, "z": -13.6,
                                   "p": 2e-7, "ci_low": -3.9, "ci_high": -2.9}],
                        "variance": {"participant": 0.31, "stimulus": None, "residual": 0.92}, "note": ""},
        "reliability": {"interval": 0.45, "ordinal": None, "note": "ordinal alpha needs more stimuli"},
        "notes": [],
        "figures": {"significance_matrix": figures, "box_violin": figures},
    }


def _summary(out_dir):
    figures = _figure(out_dir, "b1-significance")
    bt_fig = _figure(out_dir, "p1-bradley-terry")
    return {
        "schema": "evalsite.report/1",
        "title": "Lip-sync naturalness",
        "source": {"kind": "study", "slug": "lipsync", "version": 3, "path": None, "format": "platform"},
        "spec_sha256": "ab" * 32,
        "snapshot_at": "2025-01-02T03:04:05Z",
        "generated_at": "2025-01-02T03:05:00Z",
        "design": "per-question",
        "settings": {"alpha": 0.05, "correction": "holm", "zero_method": "wilcox", "n_boot": 10000,
                     "bt_boot": 2000, "seed": 7, "ci_level": 0.95, "rules": {"min_watch": 0.8},
                     "matched": "ground_truth", "mismatched": ["random_alignment"], "power": None},
        "versions": {"python": "3.11.9", "numpy": "2.4.6", "evalsite": "0.9"},
        "methods": {"friedman": "Friedman (1937) test on participant means.",
                    "correction": "Holm (1979) step-down correction."},
        "input": {"rows": 250, "participants": 13, "dropped": [{"reason": "no value", "rows": 2}]},
        "exclusions": {
            "rules": [{"rule": "attention_check", "order": 1, "description": "Fails an attention check.",
                       "applied": True},
                      {"rule": "speed", "order": 4, "description": "Answers too fast.", "applied": False}],
            "excluded": [{"participant": "P13", "rule": "attention_check",
                          "reason": "answered 2 of 3 attention checks wrongly"}],
            "n_participants_before": 13, "n_participants_after": 12,
            "n_ratings_before": 240, "n_ratings_after": 216},
        "messages": [{"level": "warning", "text": "Condition still has few ratings in block b2."}],
        "blocks": [_block("b1", "naturalness", figures), _block("b2", "sync", figures)],
        "items": [{"question": "naturalness", "embodiment": "avatar",
                   "summary": [{"item": "upper", **_row("ground_truth", 5.0)}, {"item": "lower", **_row("still", 2.5)}],
                   "figures": {}}],
        "preference": [{
            "id": "p1", "question": "which is better", "embodiment": "avatar", "n_choices": 60,
            "n_participants": 12,
            "win_rates": [{"condition": "ground_truth", "wins": 34, "losses": 14, "ties": 2, "n": 50, "win_rate": 0.7},
                          {"condition": "random_alignment", "wins": 14, "losses": 34, "ties": 2, "n": 50,
                           "win_rate": 0.3}],
            "win_matrix": {"conditions": ["ground_truth", "random_alignment"],
                           "share": [[None, 0.7], [0.3, None]], "n": [[0, 50], [50, 0]]},
            "bradley_terry": [{"condition": "ground_truth", "score": 0.42, "ci_low": 0.2, "ci_high": 0.66},
                              {"condition": "random_alignment", "score": -0.42, "ci_low": -0.66, "ci_high": -0.2}],
            "bradley_terry_note": "",
            "matched_vs_mismatched": {"matched": "ground_truth", "mismatched": ["random_alignment"], "n": 48,
                                      "matched_wins": 34, "share": 0.708, "p": 0.0004, "ci_low": 0.56,
                                      "ci_high": 0.83, "note": ""},
            "notes": [], "figures": {"bradley_terry": bt_fig}}],
        "objective_metrics": [{"model": "m1", "kind": "audio2face", "condition": "ground_truth",
                               "metrics": {"lve": np.float32(0.00123), "fdd": 4.5}}],
        "power": None,
    }


@pytest.fixture
def report(tmp_path):
    summary = _summary(tmp_path)
    return summary, write_report(summary, tmp_path, compress=False)


def _csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_every_file_is_written(report, tmp_path):
    _, paths = report
    assert set(paths) == {"html", "pdf", "json", "tables"}
    assert paths["html"] == tmp_path / "index.html" and paths["pdf"] == tmp_path / "report.pdf"
    for key in ("html", "pdf", "json"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0
    assert sorted(p.name for p in paths["tables"].iterdir()) == sorted(
        ["summary.csv", "pairwise.csv", "omnibus.csv", "items.csv", "win_rates.csv", "bradley_terry.csv",
         "exclusions.csv", "mixed_model.csv"])
    assert not [p for p in tmp_path.rglob("*.tmp")], "temporary files are renamed, never left behind"


def test_summary_json_round_trips_with_nan_as_null(report):
    summary, paths = report
    text = paths["json"].read_text(encoding="utf-8")
    loaded = json.loads(text)
    assert text == json.dumps(loaded, sort_keys=True, indent=1, allow_nan=False, ensure_ascii=False) + "\n"
    nasty_pair = loaded["blocks"][0]["pairwise"][2]
    assert nasty_pair["statistic"] is None and nasty_pair["cohens_d"] is None and nasty_pair["p"] is None
    assert loaded["blocks"][0]["summary"][0]["mean"] == 5.4321  # numpy scalar became a plain float
    assert loaded["objective_metrics"][0]["metrics"]["lve"] == pytest.approx(0.00123)
    assert loaded["title"] == summary["title"] and loaded["exclusions"] == summary["exclusions"]
    assert math.isnan(summary["blocks"][0]["pairwise"][2]["statistic"]), "the caller's dict is not changed"


def test_html_shows_formatted_numbers_notes_and_figures(report):
    _, paths = report
    page = paths["html"].read_text(encoding="utf-8")
    text = html.unescape(page)
    assert "Friedman χ²(2) = 8.77, p = .012" in text  # omnibus p 0.0123
    assert "p < .001" in text  # matched-vs-mismatched p 0.0004
    assert '<td class="num">&lt; .001</td>' in page  # pairwise p_adj 0.0004 in the table
    assert "5.43" in text and "[5.13, 5.73]" in text  # mean and bootstrap CI of ground_truth
    assert "answered 2 of 3 attention checks wrongly" in text and "P13" in text
    assert "Condition still has few ratings in block b2." in text and 'class="warning"' in page
    assert 'title="All 12 participant(s) gave the same mean rating."' in page  # the missing p-value's note
    assert 'src="figures/b1-significance.png"' in page and 'href="figures/b1-significance.svg"' in page
    assert 'src="figures/p1-bradley-terry.png"' in page
    assert "Kruskal" not in text and "Krippendorff's α: interval 0.45, ordinal —" in text
    assert "Holm" in text and "Random seed" in text and "Friedman (1937) test on participant means." in text
    assert "ab" * 32 in text and "2025-01-02T03:04:05Z" in text and "numpy 2.4.6" in text
    assert "0.70 (50)" in text  # win matrix share with its number of trials


def test_html_is_escaped_and_standalone(report):
    _, paths = report
    page = paths["html"].read_text(encoding="utf-8")
    assert "&lt;b&gt;x&lt;/b&gt;" in page and NASTY not in page
    assert "<script" not in page and "<link rel=\"stylesheet\"" not in page
    assert 'src="http' not in page and "<style>" in page


def test_pdf_is_deterministic_and_has_the_text(report, tmp_path):
    summary, paths = report
    pdf = paths["pdf"].read_bytes()
    assert pdf.startswith(b"%PDF")
    assert b"ground_truth" in pdf and b"answered 2 of 3 attention checks wrongly" in pdf
    assert b"/CreationDate" not in pdf and b"/ModDate" not in pdf
    second = tmp_path / "second"
    second.mkdir()
    (second / "figures").symlink_to(tmp_path / "figures")
    paths2 = write_report(summary, second, compress=False)
    assert paths2["pdf"].read_bytes() == pdf, "same summary, same PDF bytes (from another folder too)"
    assert paths2["json"].read_bytes() == paths["json"].read_bytes()


def test_compressed_pdf_is_deterministic(tmp_path):
    summary = _summary(tmp_path)
    first = write_report(summary, tmp_path)["pdf"].read_bytes()
    second = write_report(summary, tmp_path)["pdf"].read_bytes()
    assert first.startswith(b"%PDF") and first == second
    assert b"ground_truth" not in first, "page streams are compressed by default"


def test_csv_tables_have_headers_and_rows(report):
    _, paths = report
    tables = paths["tables"]
    summary_rows = _csv(tables / "summary.csv")
    assert summary_rows[0] == ["block", "question", "item", "embodiment", "condition", "n_ratings",
                               "n_participants", "mean", "median", "sd", "ci_boot_low", "ci_boot_high",
                               "ci_t_low", "ci_t_high"]
    assert len(summary_rows) == 1 + 6
    assert summary_rows[1][:5] == ["b1", "naturalness", "", "avatar", "ground_truth"]
    assert summary_rows[1][7] == "5.4321" and float(summary_rows[1][11]) == 5.4321 + 0.3  # repr precision
    pairwise = _csv(tables / "pairwise.csv")
    assert pairwise[0][:6] == ["block", "question", "item", "embodiment", "a", "b"] and len(pairwise) == 1 + 6
    header = pairwise[0]
    nan_row = pairwise[3]
    assert nan_row[header.index("p")] == "" and nan_row[header.index("statistic")] == ""
    assert nan_row[header.index("significant")] == "" and pairwise[1][header.index("significant")] == "true"
    assert [len(_csv(tables / name)) for name in ("omnibus.csv", "items.csv", "win_rates.csv",
                                                   "bradley_terry.csv", "exclusions.csv", "mixed_model.csv")] \
        == [1 + 2, 1 + 2, 1 + 2, 1 + 2, 1 + 1, 1 + 4]
    assert _csv(tables / "exclusions.csv") == [["participant", "rule", "reason"],
                                               ["P13", "attention_check", "answered 2 of 3 attention checks wrongly"]]
    assert _csv(tables / "win_rates.csv")[0] == ["block", "question", "embodiment", "condition", "wins", "losses",
                                                 "ties", "n", "win_rate"]


def test_empty_summary_with_an_error_still_writes_everything(tmp_path):
    summary = {"schema": "evalsite.report/1", "title": "Empty study", "blocks": [], "items": [], "preference": [],
               "objective_metrics": [], "power": None, "exclusions": None, "settings": {},
               "messages": [{"level": "error", "text": "No ratings were collected yet."}]}
    paths = write_report(summary, tmp_path, compress=False)
    page = paths["html"].read_text(encoding="utf-8")
    assert "No ratings were collected yet." in page and 'class="error"' in page
    assert "No rated questions in these data." in page
    assert b"No ratings were collected yet." in paths["pdf"].read_bytes()
    for name in ("summary.csv", "pairwise.csv", "exclusions.csv", "win_rates.csv"):
        rows = _csv(paths["tables"] / name)
        assert len(rows) == 1 and rows[0], f"{name} keeps its header when empty"


def test_missing_optional_keys_and_figures_do_not_crash(tmp_path):
    summary = {"schema": "evalsite.report/1",
               "blocks": [{"id": "b1", "summary": [{"condition": "a", "mean": None}], "omnibus": None,
                           "pairwise": None, "figures": {"box_violin": ["figures/gone.png", "figures/gone.svg"],
                                                         "evil": ["javascript:alert(1).png"]}}],
               "preference": [{"id": "p1", "win_matrix": {"conditions": ["a", "b"], "share": [[None]]},
                               "matched_vs_mismatched": {"p": None}}],
               "power": {"curve": [{"n": 10, "power": 0.5}], "n_needed": None, "target": 0.8}}
    paths = write_report(summary, tmp_path)
    page = paths["html"].read_text(encoding="utf-8")
    assert "figures/gone.png is missing" in page
    assert "is not a path inside the report folder" in page and '="javascript' not in page
    assert "Power 0.80 was not reached with up to 10 participants." in page
    assert paths["pdf"].read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize("summary", [{}, {"schema": "evalsite.report/2"}, {"title": "no schema"}, None, []])
def test_a_summary_without_the_schema_is_refused(tmp_path, summary):
    with pytest.raises(ValueError, match="evalsite.report/1"):
        write_report(summary, tmp_path)
    assert not any(tmp_path.iterdir()), "nothing is written for a refused summary"


@pytest.mark.parametrize("p, expected", [
    (0.0123, "p = .012"), (0.0004, "p < .001"), (0.001, "p = .001"), (0.049999, "p = .050"), (0.5, "p = .500"),
    (1.0, "p > .999"), (np.float64(0.2), "p = .200"), (None, "—"), (float("nan"), "—"), ("0.1", "—")])
def test_format_p(p, expected):
    assert format_p(p) == expected


def test_format_p_without_prefix_and_format_ci():
    assert format_p(0.0123, prefix=False) == ".012" and format_p(0.0001, prefix=False) == "< .001"
    assert format_ci(0.1234, 1.5) == "[0.12, 1.50]"
    assert format_ci(-0.001, 2) == "[0.00, 2.00]"  # no "-0.00"
    assert format_ci(-1.256, -0.5, digits=1) == "[-1.3, -0.5]"
    assert format_ci(None, 1) == "—" and format_ci(float("nan"), 1) == "—"
