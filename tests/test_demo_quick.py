"""`manage.py demo --quick` end to end, as a user runs it: its own var/ folder, SQLite and the embedded broker
(no DATABASE_URL, no Redis), every stage for real — synthetic corpus, seven models trained, metrics,
rendered stimuli, a study with Likert, MUSHRA-style and pairwise pages, attentive and careless bots over
HTTP, the significance report, the stimulus bundle. Then a second run must make nothing and say so.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _demo(var: Path, *extra: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "MEDIA_ROOT", "REPORTS_ROOT", "STATIC_ROOT",
                        "PARTICIPANT_RATE_LIMITS")}
    env["EVALSITE_VAR_DIR"] = str(var)
    return subprocess.run([sys.executable, "manage.py", *extra], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_demo_quick_runs_the_whole_loop_then_reuses_it(tmp_path):
    var = tmp_path / "var"
    first = _demo(var, "demo", "--quick", "--no-serve")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    for stage in ("[1/8]", "[2/8]", "[3/8]", "[4/8]", "[5/8]", "[6/8]", "[7/8]", "[8/8]"):
        assert stage in out, f"stage {stage} did not run:\n{out[-2000:]}"
    links = dict(re.findall(r"^  ([a-z ]+?):\s+(\S+)", out, re.M))
    assert re.fullmatch(r"http://127\.0\.0\.1:8000/s/[A-Za-z0-9_-]{16,}/", links["participant link"])
    assert links["report"].endswith("/index.html") and "/reports/" in links["report"]

    db = sqlite3.connect(var / "evalsite.sqlite3")
    models = dict(db.execute("select name, status from studies_trainedmodel"))
    kinds = {name.rsplit("-", 1)[1] for name in models}
    assert kinds == {"separate", "joint", "forked", "glow", "apc", "audio2landmark", "inverse"}
    assert set(models.values()) == {"done"}
    # The study's stimuli are real renders (not placeholders) of every condition, from the model ones too.
    rendered = db.execute(
        "select c.name, s.is_placeholder from studies_stimulus s join studies_condition c on c.id = s.condition_id "
        "join studies_utterance u on u.id = s.utterance_id join studies_corpus k on k.id = u.corpus_id "
        "where k.name = 'demo-synthetic-quick' and c.kind not in ('attention_check', 'av_check')").fetchall()
    assert {name for name, _ in rendered} == {"ground_truth", "joint", "still"}
    assert not any(placeholder for _, placeholder in rendered)
    av_check = db.execute(
        "select s.is_placeholder, s.expected_answer from studies_stimulus s join studies_condition c on "
        "c.id = s.condition_id join studies_utterance u on u.id = s.utterance_id join studies_corpus k on "
        "k.id = u.corpus_id where k.name = 'demo-synthetic-quick' and c.kind = 'av_check'").fetchall()
    assert [(p, json.loads(a)["digits"].isdecimal()) for p, a in av_check] == [(0, True)]  # rendered on the avatar
    statuses = db.execute("select status, count(*) from studies_participant where source = 'bot' group by status")
    assert dict(statuses) == {"completed": 2}
    questions = {q for (q,) in db.execute("select distinct t.question from studies_response r "
                                          "join studies_trial t on t.id = r.trial_id")}
    assert questions == {"naturalness", "match", "preference"}
    excluded = db.execute("select count(distinct participant_id) from studies_exclusion").fetchone()[0]
    assert excluded == 1  # the careless bot

    summary = json.loads(next(var.glob("reports/demo-talking-faces-quick/*/summary.json")).read_text())
    assert summary["exclusions"]["n_participants_before"] == 2
    assert summary["exclusions"]["n_participants_after"] == 1
    bundle = Path(links["stimulus bundle"])
    with zipfile.ZipFile(bundle) as zf:
        names = zf.namelist()
    assert any(n.endswith(".mp4") for n in names) and any(n.endswith("study.yaml") for n in names)
    verified = _demo(var, "export_stimuli", "--verify", str(bundle))
    assert verified.returncode == 0, verified.stdout + verified.stderr

    second = _demo(var, "demo", "--quick", "--no-serve")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "everything was already made" in second.stdout
    assert not re.search(r"^\[\d/8\]", second.stdout, re.M), second.stdout[-2000:]
    assert db.execute("select count(*) from studies_participant where source = 'bot'").fetchone()[0] == 2
