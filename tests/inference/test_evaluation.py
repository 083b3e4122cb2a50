"""Objective evaluation against recorded motion, with the random-alignment and still baselines."""
import numpy as np
import pytest

from inference.evaluation import Reference, evaluate, random_alignment, score_clip
from inference.layouts import ARKIT52
from inference.motion import MotionClip, MotionError, time_shift


def _reference(name, speaker, seed, T=120):
    rng = np.random.default_rng(seed)
    t = np.arange(T) / 25
    values = np.full((T, 52), 0.05, np.float32)
    values[:, ARKIT52.index("jawOpen")] = 0.4 + 0.3 * np.sin(2 * np.pi * (0.5 + 0.1 * seed) * t)
    values[:, ARKIT52.index("browInnerUp")] = 0.2 + 0.1 * np.sin(2 * np.pi * 0.4 * t + seed)
    values[:, ARKIT52.index("mouthSmileLeft")] = 0.2 + 0.05 * rng.standard_normal(T)
    head = np.zeros((T, 6), np.float32)
    head[:, 0] = 4 * np.sin(2 * np.pi * 0.5 * t + seed)
    head[:, 1] = 3 * np.cos(2 * np.pi * 0.3 * t)
    return Reference(name, MotionClip(fps=25, layout="arkit52", values=values, head_pose=head), speaker)


@pytest.fixture
def refs():
    return [_reference(f"u{i}", "ab"[i % 2], i) for i in range(6)]


def _table(table):
    return {(r.model, r.region, r.metric): r.value for r in table.rows}


def test_the_recording_itself_scores_perfectly_and_the_baselines_do_not(refs):
    perfect = {r.name: r.clip for r in refs}
    shifted = {r.name: time_shift(r.clip, 80) for r in refs}
    values = _table(evaluate({"copy": perfect, "late": shifted}, refs, seed=0))
    assert values[("copy", "arkit52:lower", "ccc")] == pytest.approx(1.0)
    assert values[("copy", "landmarks:lower", "ccc")] == pytest.approx(1.0)
    assert values[("copy", "landmarks:all", "D-P")] == pytest.approx(0.0, abs=1e-6)
    assert values[("copy", "head", "ccc")] == pytest.approx(1.0)
    assert values[("copy", "arkit52:lower", "cca")] == pytest.approx(1.0, abs=1e-6)
    assert values[("still", "arkit52:lower", "ccc")] == 0.0
    # An 80 ms lag costs concordance; another utterance's motion costs more.
    assert values[("random_alignment", "landmarks:lower", "ccc")] < values[("late", "landmarks:lower", "ccc")] < 1.0
    assert values[("late", "landmarks:all", "D-P")] > 0


def test_channels_that_never_move_do_not_count(refs):
    # Both constant and equal would read as CCC 1 if a still channel were scored (a perfect score for free).
    still = {r.name: r.clip.with_values(np.repeat(r.clip.values.mean(0, keepdims=True), r.clip.n_frames, 0))
             for r in refs}
    values = _table(evaluate({"flat": still}, refs, baselines=False))
    face_ccc = {key: v for key, v in values.items() if key[2] == "ccc" and key[1] != "head"}
    assert len(face_ccc) >= 4
    # (landmarks are aligned before scoring; the float rounding of that leaves up to ~1e-9, far from 1)
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in face_ccc.values()), face_ccc


def test_random_alignment_is_seeded_prefers_the_same_speaker_and_records_its_choice(refs):
    a = random_alignment(refs[0], refs, seed=7)
    b = random_alignment(refs[0], refs, seed=7)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.metadata["donor"] in {"u2", "u4"}  # speaker "a", never u0 itself
    assert a.n_frames == refs[0].clip.n_frames and a.metadata["seed"] == 7
    donors = {random_alignment(refs[0], refs, seed=s).metadata["donor"] for s in range(20)}
    assert donors == {"u2", "u4"}
    lonely = [refs[0], _reference("x", "z", 9)]
    assert random_alignment(refs[0], lonely, seed=0).metadata["donor"] == "x"  # no same speaker: anyone else
    with pytest.raises(MotionError, match="two utterances"):
        random_alignment(refs[0], refs[:1], seed=0)


def test_length_mismatch_and_unknown_utterances_are_refused(refs):
    short = MotionClip(fps=25, layout="arkit52", values=refs[0].clip.values[:-5])
    with pytest.raises(MotionError, match="frames"):
        score_clip(short, refs[0])
    with pytest.raises(MotionError, match="no recorded clip"):
        evaluate({"m": {"nope": refs[0].clip}}, refs)


def test_diversity_is_reported_for_sampling_models(refs):
    noisy = {r.name: [r.clip.with_values(np.clip(r.clip.values + 0.01 * k, 0, 1)) for k in range(3)] for r in refs}
    values = _table(evaluate({"g": {r.name: r.clip for r in refs}}, refs, samples={"g": noisy}, baselines=False))
    assert values[("g", "all", "diversity")] > 0
