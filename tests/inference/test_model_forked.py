"""The forked face → head-pose BLSTM (Greenwood et al. 2018): its modules, its two training stages, its PCA
target space and one small run from WAV files to a generated clip."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import scipy.io.wavfile
import torch

from inference.layouts import ARKIT52
from inference.models import TrainSettings
from inference.models.forked import RECIPE, Config, ForkedBLSTM, build, fit_space, stages, targets, to_clip
from inference.motion import MotionClip, MotionError, from_pca, retarget
from inference.training import (CorpusItem, Sequence, evaluate_loss, fit_stages, load_checkpoint, load_sequences,
                                train)
from inference.generate import generate, generate_many

FBANK = 40
K = 8
FPS = 25.0
SAMPLE_RATE = 16000


def _model(seed: int = 0, **overrides) -> ForkedBLSTM:
    torch.manual_seed(seed)
    return ForkedBLSTM(FBANK, K, Config(**overrides))


def _learnable_batch(B: int = 4, T: int = 40, seed: int = 0) -> dict:
    """Inputs and targets that depend on them (smoothed random projections), so a network can fit them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, FBANK, generator=g)
    kernel = torch.ones(1, 1, 5) / 5
    smoothed = torch.nn.functional.conv1d(x.transpose(1, 2).reshape(-1, 1, T), kernel, padding=2)
    smoothed = smoothed.reshape(B, FBANK, T).transpose(1, 2)
    y = torch.tanh(smoothed @ torch.randn(FBANK, K + 6, generator=g) / 2)
    y = (y - y.mean(dim=(0, 1))) / y.std(dim=(0, 1))
    lengths = torch.full((B,), T)
    return {"x": x, "y": y, "lengths": lengths, "mask": torch.ones(B, T, dtype=torch.bool)}


def _face_params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith("face.")}


# --- modules -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 7, 161])
def test_output_has_face_then_pose_columns_for_any_length(T):
    model = _model().eval()
    out = model(torch.randn(2, T, FBANK), torch.tensor([T, T]))
    assert out.shape == (2, T, K + 6)
    assert torch.isfinite(out).all()


def test_padded_batch_gives_each_row_what_it_gives_alone():
    model = _model().eval()
    lengths = [161, 7, 1, 50]
    xs = [torch.randn(T, FBANK) for T in lengths]
    batch = torch.zeros(len(xs), max(lengths), FBANK)
    for i, x in enumerate(xs):
        batch[i, :len(x)] = x
        batch[i, len(x):] = 5.0  # padding full of junk must not matter
    with torch.no_grad():
        together = model(batch, torch.tensor(lengths))
        for i, x in enumerate(xs):
            alone = model(x[None], torch.tensor([len(x)]))[0]
            torch.testing.assert_close(together[i, :len(x)], alone, atol=1e-5, rtol=1e-4)


def test_prediction_is_deterministic_and_seeds_do_not_matter():
    model = _model().eval()
    x, lengths = torch.randn(3, 30, FBANK), torch.tensor([30, 20, 9])
    with torch.no_grad():
        a = RECIPE.predict(model, Config(), x, lengths, seeds=[0, 0, 0])
        b = RECIPE.predict(model, Config(), x, lengths, seeds=[7, 8, 9], temperature=0.5)
    assert torch.equal(a, b)
    rebuilt = _model().eval()  # same seed, same weights, same answer
    with torch.no_grad():
        assert torch.equal(rebuilt(x, lengths), a)


def test_head_branch_reads_only_the_latent_face_layer():
    model = _model().eval()
    x1, x2 = torch.randn(2, 25, FBANK), torch.randn(2, 25, FBANK)
    with torch.no_grad():
        before = model(x1)
        # Swap the face encoder for one whose latent ignores the speech: the pose must stop depending on it.
        fixed_latent = model.face.encode(x1)
        model.face.encode = lambda x, lengths=None: fixed_latent
        after_1, after_2 = model(x1), model(x2)
    torch.testing.assert_close(after_1, before)
    torch.testing.assert_close(after_2[..., K:], before[..., K:])
    assert {id(p) for p in model.head.parameters()}.isdisjoint(id(p) for p in model.face.parameters())
    assert model.head.lstm.input_size == 2 * Config().face_hidden


def test_pose_does_depend_on_the_speech_through_the_latent():
    model = _model().eval()
    with torch.no_grad():
        a, b = model(torch.randn(1, 25, FBANK)), model(torch.randn(1, 25, FBANK))
    assert not torch.allclose(a[..., K:], b[..., K:])


def test_build_checks_the_target_width():
    space = {"components": np.zeros((K, 204), np.float32)}
    with pytest.raises(ValueError, match="8 PCA scores and 6 head-pose"):
        build(Config(), FBANK, K, space)


# --- the two stages ------------------------------------------------------------------------------------


def _run(stage, model, batch, steps, lr=1e-2):
    params = list(stage.parameters(model)) if stage.parameters else list(model.parameters())
    optimiser = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        model.train()
        loss, _ = stage.loss(model, batch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses


def test_overfits_a_tiny_batch_face_first_then_head():
    model = _model(dropout=0.0)
    batch = _learnable_batch()
    face, head = stages(Config())
    face_losses = _run(face, model, batch, 150)
    assert face_losses[-1] < 0.2 * face_losses[0], face_losses[::25]
    head_losses = _run(head, model, batch, 150)
    assert head_losses[-1] < 0.2 * head_losses[0], head_losses[::25]


def test_head_stage_trains_only_the_head_branch():
    model = _model()
    face, head = stages(Config())
    assert face.parameters is None  # stage 1 trains the face network (the branch gets no gradient there)
    chosen = {id(p) for p in head.parameters(model)}
    assert chosen == {id(p) for p in model.head.parameters()}
    batch = _learnable_batch()
    loss, _ = head.loss(model, batch)
    loss.backward()
    assert all(p.grad is None for p in model.face.parameters())
    assert all(p.grad is not None for p in model.head.parameters())


def test_head_stage_leaves_the_face_network_and_its_loss_unchanged(tmp_path):
    """Through the real training loop: stage 1, then stage 2 alone; every face weight and the face loss
    stay exactly as stage 1 left them while the pose loss falls."""
    cfg = Config(train=TrainSettings(max_epochs=4, batch_size=4, crop_frames=30, patience=10, lr=5e-3))
    rng = np.random.default_rng(1)
    seqs = [Sequence(f"u{i}", rng.standard_normal((T, FBANK)).astype(np.float32),
                     rng.standard_normal((T, K + 6)).astype(np.float32)) for i, T in enumerate([40, 35, 50, 28])]
    eval_batch = _learnable_batch(B=4, T=33, seed=3)
    face_stage, head_stage = stages(cfg)
    only = lambda stage: dataclasses.replace(RECIPE, stages=lambda c: [stage])  # noqa: E731
    model = _model()
    fit_stages(model, only(face_stage), cfg, seqs, [], resume_path=tmp_path / "face.resume")
    model.eval()
    with torch.no_grad():
        face_before = face_stage.loss(model, eval_batch)[0]
        pose_before = head_stage.loss(model, eval_batch)[0]
    weights_before = _face_params(model)
    head_before = copy.deepcopy(model.head.state_dict())

    history = fit_stages(model, only(head_stage), cfg, seqs, [], resume_path=tmp_path / "head.resume")
    model.eval()
    with torch.no_grad():
        face_after = face_stage.loss(model, eval_batch)[0]
        pose_after = head_stage.loss(model, eval_batch)[0]
    assert [h["stage"] for h in history] == ["head"] * 4
    for name, value in _face_params(model).items():
        assert torch.equal(value, weights_before[name]), name
    assert torch.equal(face_after, face_before)
    assert not all(torch.equal(v, head_before[k]) for k, v in model.head.state_dict().items())
    assert pose_after != pose_before


# --- the target space ----------------------------------------------------------------------------------


def _arkit_clip(T: int, seed: int, *, moving=14, head: bool = True, envelope=None) -> MotionClip:
    """Blendshape motion with `moving` independently wandering channels (a count, or their names; jawOpen
    follows the envelope when given), plus a head pose that nods with the envelope."""
    rng = np.random.default_rng(seed)
    values = np.zeros((T, len(ARKIT52)), np.float32)
    names = moving if not isinstance(moving, int) else \
        [n for n in ARKIT52 if not n.startswith(("eyeLook", "tongue"))][:moving]
    kernel = np.ones(5) / 5
    for name in names:
        walk = np.convolve(rng.standard_normal(T + 4), kernel, mode="valid")[:T]
        values[:, ARKIT52.index(name)] = np.clip(0.3 + 0.2 * walk, 0, 1)
    if envelope is not None:
        values[:, ARKIT52.index("jawOpen")] = 0.6 * envelope
    pose = None
    if head:
        drive = envelope if envelope is not None else rng.random(T)
        pose = np.stack([8 * drive, 3 * np.sin(np.arange(T) / 7), rng.normal(0, 0.5, T),
                         rng.normal(0, 1, T), 2 * drive, np.zeros(T)], axis=1)
    return MotionClip(fps=FPS, layout="arkit52", values=values, head_pose=pose)


def test_pca_basis_retains_its_stated_variance():
    clips = [_arkit_clip(60, seed) for seed in range(6)]
    space = fit_space(Config(), clips)
    frames = np.concatenate([retarget(c, "landmarks:ibug68").values for c in clips]).astype(np.float64)
    centred = frames - frames.mean(axis=0)
    components = np.asarray(space["components"], np.float64)
    assert components.shape == (K, 204)
    np.testing.assert_allclose(components @ components.T, np.eye(K), atol=1e-5)
    reconstructed = centred @ components.T @ components
    retained = 1 - ((centred - reconstructed) ** 2).sum() / (centred ** 2).sum()
    assert retained == pytest.approx(space["retained_variance"], abs=1e-4)
    assert space["retained_variance"] == pytest.approx(float(np.sum(space["explained_variance_ratio"])), abs=1e-6)
    # No other 8-dimensional basis keeps more: the top eigenvalues of the covariance bound it.
    eigen = np.sort(np.linalg.eigvalsh(centred.T @ centred))[::-1]
    assert retained == pytest.approx(eigen[:K].sum() / eigen.sum(), abs=1e-4)


def test_pca_keeps_fewer_components_when_the_face_moves_in_fewer_directions():
    clips = [_arkit_clip(60, seed, moving=("jawOpen", "browInnerUp", "mouthSmileLeft")) for seed in range(4)]
    space = fit_space(Config(), clips)
    assert len(space["components"]) == 3
    assert space["retained_variance"] == pytest.approx(1.0, abs=1e-4)


def test_targets_are_pca_scores_then_pose_and_to_clip_inverts_them():
    clips = [_arkit_clip(50, seed) for seed in range(4)]
    space = fit_space(Config(), clips)
    y = targets(Config(), space, clips[0])
    assert y.shape == (50, K + 6)
    np.testing.assert_array_equal(y[:, K:], clips[0].head_pose)
    clip = to_clip(Config(), space, y, FPS)
    assert clip.layout == "pca" and clip.channels == tuple(f"pc{i}" for i in range(1, K + 1))
    np.testing.assert_array_equal(clip.head_pose, clips[0].head_pose)
    landmarks = retarget(clip, "landmarks:ibug68")
    truth = retarget(clips[0], "landmarks:ibug68").values
    assert landmarks.values.shape == truth.shape
    # What the 8 components leave out of this clip is at most what they leave out of the corpus, roughly.
    error = ((landmarks.values - truth) ** 2).sum() / ((truth - truth.mean(axis=0)) ** 2).sum()
    assert error < 2 * (1 - space["retained_variance"]) + 1e-3
    np.testing.assert_allclose(from_pca(clip).values, landmarks.values)


def test_clips_without_head_pose_are_refused_with_a_reason():
    clips = [_arkit_clip(40, 0), _arkit_clip(40, 1, head=False)]
    with pytest.raises(MotionError, match="head pose"):
        fit_space(Config(), clips)
    space = fit_space(Config(), clips[:1])
    with pytest.raises(MotionError, match="head pose"):
        targets(Config(), space, clips[1])


# --- end to end ----------------------------------------------------------------------------------------


def _corpus(folder, n: int = 10):
    """Tones switched on and off; the jaw and a nod follow the on/off envelope."""
    items = []
    rng = np.random.default_rng(0)
    for i in range(n):
        T = int(rng.integers(50, 80))  # 2.0–3.2 s
        envelope = np.zeros(T)
        t = 0
        while t < T:
            length = int(rng.integers(4, 15))
            envelope[t:t + length] = rng.random() > 0.4
            t += length
        samples_per_frame = SAMPLE_RATE / FPS
        per_sample = np.repeat(envelope, int(samples_per_frame))[: int(T * samples_per_frame)]
        times = np.arange(len(per_sample)) / SAMPLE_RATE
        audio = 0.3 * per_sample * np.sin(2 * np.pi * (180 + 40 * i) * times) + 0.003 * rng.standard_normal(len(times))
        wav = folder / f"u{i}.wav"
        scipy.io.wavfile.write(wav, SAMPLE_RATE, (audio * 32767).astype(np.int16))
        motion = folder / f"u{i}.npz"
        _arkit_clip(T, 100 + i, envelope=envelope).save(motion)
        items.append(CorpusItem(f"u{i}", "val" if i >= n - 2 else "train", str(wav), str(motion)))
    return items


def test_train_load_generate_round_trip(tmp_path):
    items = _corpus(tmp_path)
    out = tmp_path / "forked.pt"
    trained = train("forked", items, out, config={"train": {"max_epochs": 6, "crop_frames": 40, "batch_size": 4}},
                    cache_dir=tmp_path / "cache")
    assert [h["stage"] for h in trained.history] == ["face"] * 6 + ["head"] * 6

    loaded = load_checkpoint(out)
    assert loaded.kind == "forked" and loaded.feature_spec.kind == "fbank"
    # The checkpoint scores on the validation split what training recorded for its best weights: the head
    # stage's best, and — the face being frozen in stage 2 — still the face stage's best.
    _, splits = load_sequences(RECIPE, loaded.config, items, cache_dir=tmp_path / "cache", space=loaded.space)
    val = [Sequence(s.name, loaded.feature_norm.apply(s.x), loaded.target_norm.apply(s.y)) for s in splits["val"]]
    face_stage, head_stage = stages(loaded.config)
    for stage in (face_stage, head_stage):
        best = min(h["val_loss"] for h in trained.history if h["stage"] == stage.name)
        assert evaluate_loss(loaded.model, stage, val, loaded.config.train) == pytest.approx(best, rel=1e-5)
    loaded.model.eval()  # evaluate_loss hands the model back in training mode

    clip = generate(out, items[0].audio_path)
    expected_frames = MotionClip.load(items[0].motion_path).n_frames
    assert clip.layout == "pca" and clip.values.shape == (expected_frames, K)
    assert clip.head_pose.shape == (expected_frames, 6)
    assert retarget(clip, "landmarks:ibug68").landmarks().shape == (expected_frames, 68, 3)
    again = generate(loaded, items[0].audio_path)
    np.testing.assert_array_equal(again.values, clip.values)
    np.testing.assert_array_equal(again.head_pose, clip.head_pose)
    # Batched with a longer utterance, the result is the same.
    batched = generate_many(loaded, [items[1].audio_path, items[0].audio_path])[1]
    np.testing.assert_allclose(batched.values, clip.values, atol=1e-4)
    np.testing.assert_allclose(batched.head_pose, clip.head_pose, atol=1e-3)


def test_training_without_head_pose_fails_clearly(tmp_path):
    items = _corpus(tmp_path, n=3)
    bare = MotionClip.load(items[0].motion_path)
    MotionClip(fps=bare.fps, layout=bare.layout, values=bare.values).save(items[0].motion_path)
    with pytest.raises(MotionError, match="forked model predicts head pose"):
        train("forked", items, tmp_path / "f.pt", config={"train": {"max_epochs": 1}}, cache_dir=tmp_path / "c")
