"""Tests for the audio-to-landmark network (inference/models/audio2landmark.py): the loss and its velocity
term, the landmark target space, length and padding contracts, that it learns, how the APC encoder is
taken over (`init_from`) and kept (`freeze_encoder`), and one end-to-end run: apc train → audio2landmark
train from it → load → generate a landmark clip as long as the audio.

Training data is made here: tone bursts with an on/off envelope (written as WAV) and ARKit clips whose jaw
and lips follow the envelope. Most tests call the modules directly on small tensors.
"""
from __future__ import annotations

import wave

import numpy as np
import pytest

from tests.inference.wavs import write_wav
import torch

from inference.audio import SAMPLE_RATE
from inference.generate import generate, generate_many
from inference.layouts import ARKIT52
from inference.models import apc, audio2landmark as a2l, recipe
from inference.motion import MotionClip, frames_for_duration, retarget
from inference.training import CorpusItem, _init_from, load_checkpoint, train


def small_config(**overrides) -> a2l.Config:
    return a2l.Config(**{"context": 8, "encoder_hidden": 32, "hidden": 64, "dropout": 0.0, **overrides})


def padded(rows: list[torch.Tensor]) -> torch.Tensor:
    """Rows [1, T_i, ...] padded to the longest by repeating their last frame (as generate does)."""
    T = max(r.shape[1] for r in rows)
    return torch.cat([torch.cat([r, r[:, -1:].expand(1, T - r.shape[1], *r.shape[2:])], dim=1) for r in rows])


# --- the loss ------------------------------------------------------------------------------------------


def test_velocity_term_is_zero_for_constant_sequences():
    pred = torch.zeros(2, 9, 204)
    target = torch.full((2, 9, 204), 2.0)           # constant too, but 2 away everywhere
    mask = torch.ones(2, 9, dtype=torch.bool)
    total, position, velocity = a2l.landmark_loss(pred, target, mask, velocity_weight=0.5)
    assert velocity.item() == 0.0
    assert position.item() == pytest.approx(4.0) and total.item() == pytest.approx(4.0)


def test_velocity_term_measures_the_difference_of_frame_to_frame_steps():
    ramp = torch.arange(6, dtype=torch.float32).reshape(1, 6, 1).repeat(1, 1, 3)  # moves 1 per frame
    mask = torch.ones(1, 6, dtype=torch.bool)
    target = torch.zeros(1, 6, 3)                                                  # still
    total, position, velocity = a2l.landmark_loss(ramp, target, mask, velocity_weight=0.5)
    assert velocity.item() == pytest.approx(1.0)
    assert position.item() == pytest.approx(np.mean(np.arange(6.0) ** 2))
    assert total.item() == pytest.approx(position.item() + 0.5)
    # A ramp offset from a ramp of the same slope: no velocity error at all.
    _, _, same_slope = a2l.landmark_loss(ramp + 3.0, ramp, mask, velocity_weight=0.5)
    assert same_slope.item() == 0.0


def test_loss_ignores_padding_and_the_step_into_it():
    target = torch.zeros(2, 6, 4)
    pred = torch.zeros(2, 6, 4)
    pred[1, 4:] = 50.0                               # row 1 is 4 frames long: garbage in its padding
    mask = torch.arange(6)[None, :] < torch.tensor([[6], [4]])
    total, _, _ = a2l.landmark_loss(pred, target, mask, velocity_weight=0.5)
    assert total.item() == 0.0


# --- the target space ----------------------------------------------------------------------------------


def arkit_clip(n_frames: int, envelope: np.ndarray | None = None, fps: float = 25.0) -> MotionClip:
    values = np.zeros((n_frames, len(ARKIT52)), np.float32)
    envelope = np.linspace(0, 1, n_frames) if envelope is None else envelope
    values[:, ARKIT52.index("jawOpen")] = 0.6 * envelope
    values[:, ARKIT52.index("mouthFunnel")] = 0.3 * envelope
    values[:, ARKIT52.index("browInnerUp")] = 0.2 * (1 - envelope)
    return MotionClip(fps=fps, layout="arkit52", values=values)


def test_reference_is_the_mean_training_frame_and_to_clip_undoes_targets():
    cfg = a2l.Config()
    clips = [arkit_clip(20), arkit_clip(13, np.ones(13))]
    space = a2l.fit_space(cfg, clips)
    points = np.concatenate([retarget(c, "landmarks:ibug68").landmarks() for c in clips])
    assert space["reference"].shape == (68, 3)
    np.testing.assert_allclose(space["reference"], points.mean(axis=0), atol=1e-4)
    y = a2l.targets(cfg, space, clips[0])
    assert y.shape == (20, 204)
    np.testing.assert_allclose(np.concatenate([a2l.targets(cfg, space, c) for c in clips]).mean(axis=0), 0, atol=1e-4)
    back = a2l.to_clip(cfg, space, y, 25.0)
    assert back.layout == "landmarks:ibug68" and back.head_pose is None and back.fps == 25.0
    np.testing.assert_allclose(back.values, retarget(clips[0], "landmarks:ibug68").values, atol=1e-4)


def test_recipe_contract():
    rec = recipe("audio2landmark")
    cfg = rec.Config()
    spec = rec.feature_spec(cfg)
    assert (spec.kind, spec.fps, spec.param("context"), spec.param("flatten")) == ("mel_slices", 25.0, 32, False)
    assert cfg.velocity_weight == 0.5
    with pytest.raises(ValueError, match="mel slices"):
        rec.build(cfg, 80, 204, {})
    with pytest.raises(ValueError, match="204"):
        rec.build(cfg, (32, 80), 52, {})


def test_encoder_matches_the_default_apc_encoder_by_name_and_shape():
    """With both defaults, every APC encoder parameter has a twin in audio2landmark: what init_from needs."""
    apc_params = {n: p.shape for n, p in apc.build(apc.Config(), 80, 80, {}).named_parameters()
                  if n.startswith("encoder.")}
    own = {n: p.shape for n, p in a2l.build(a2l.Config(), (32, 80), 204, {}).named_parameters()}
    assert apc_params and all(own.get(n) == shape for n, shape in apc_params.items())
    assert not any(n.startswith("predictor.") for n in own)  # APC's output layer is not taken over


def test_stages_freeze_or_fine_tune_the_encoder():
    model = a2l.build(small_config(), (8, 80), 204, {})
    encoder = {id(p) for p in model.encoder.parameters()}
    frozen = a2l.stages(small_config(freeze_encoder=True))
    assert [s.name for s in frozen] == ["head"]
    head_params = {id(p) for p in frozen[0].parameters(model)}
    assert head_params and not head_params & encoder
    assert len(head_params) + len(encoder) == len(list(model.parameters()))
    cfg = small_config(freeze_encoder=False, finetune_lr_scale=0.1, finetune_epochs=7)
    head, finetune = a2l.stages(cfg)
    assert (head.name, finetune.name) == ("head", "finetune")
    assert finetune.parameters is None  # everything, encoder included
    assert finetune.settings.lr == pytest.approx(cfg.train.lr * 0.1) and finetune.settings.max_epochs == 7


def test_head_stage_sends_no_gradient_into_the_encoder():
    cfg = small_config()
    model = a2l.build(cfg, (8, 80), 204, {})
    batch = {"x": torch.randn(2, 5, 8, 80), "y": torch.randn(2, 5, 204), "lengths": torch.tensor([5, 3]),
             "mask": torch.arange(5)[None, :] < torch.tensor([[5], [3]])}
    head, finetune = a2l.stages(cfg)
    head.loss(model, batch)[0].backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.out.weight.grad is not None
    finetune.loss(model, batch)[0].backward()
    assert all(p.grad is not None for p in model.encoder.parameters())


# --- shapes, padding, determinism ---------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 7, 161])
def test_one_landmark_frame_per_feature_frame(T):
    torch.manual_seed(0)
    cfg = small_config()
    model = a2l.build(cfg, (8, 80), 204, {}).eval()
    with torch.no_grad():
        out = a2l.predict(model, cfg, torch.randn(1, T, 8, 80), torch.tensor([T]), seeds=[0])
    assert out.shape == (1, T, 204) and torch.isfinite(out).all()


def test_a_padded_batch_gives_each_row_what_it_gives_alone():
    torch.manual_seed(0)
    cfg = small_config(attention_window=3)
    model = a2l.build(cfg, (8, 80), 204, {}).eval()
    lengths = [161, 7, 1, 2]
    rows = [torch.randn(1, T, 8, 80) for T in lengths]
    with torch.no_grad():
        together = a2l.predict(model, cfg, padded(rows), torch.tensor(lengths), seeds=[0] * 4)
        for i, row in enumerate(rows):
            alone = a2l.predict(model, cfg, row, torch.tensor([row.shape[1]]), seeds=[0])
            torch.testing.assert_close(together[i, :lengths[i]], alone[0], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(together).all()  # padded frames too: no all-masked attention row


def test_attention_reaches_only_its_window():
    torch.manual_seed(0)
    attention = a2l.LocalSelfAttention(16, window=2).eval()
    h = torch.randn(1, 20, 16)
    changed = h.clone()
    changed[:, 12] += 5.0
    with torch.no_grad():
        a, b = attention(h, None), attention(changed, None)
    moved = (a - b).abs().amax(dim=-1)[0] > 1e-6
    assert moved.nonzero().flatten().tolist() == [10, 11, 12, 13, 14]


def test_eval_mode_is_deterministic():
    cfg = small_config(dropout=0.2)
    x = torch.randn(2, 11, 8, 80)
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = a2l.build(cfg, (8, 80), 204, {}).eval()
        with torch.no_grad():
            outs += [model(x), model(x)]
    assert all(torch.equal(outs[0], o) for o in outs[1:])


# --- learning ------------------------------------------------------------------------------------------


def test_overfits_a_tiny_batch():
    torch.manual_seed(0)
    cfg = small_config()
    model = a2l.build(cfg, (8, 80), 204, {})
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 30, 8, 80, generator=g)
    t = torch.linspace(0, 6, 30)
    trajectories = torch.stack([torch.stack([torch.sin(t + k + b) for k in range(3)], -1) for b in range(2)])
    y = trajectories @ torch.randn(3, 204, generator=g) / 2          # smooth, low-rank landmark motion
    batch = {"x": x, "y": y, "lengths": torch.tensor([30, 30]), "mask": torch.ones(2, 30, dtype=torch.bool)}
    stage = a2l.stages(cfg)[-1]
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss, _ = stage.loss(model, batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], f"loss went from {losses[0]:.3f} to {losses[-1]:.3f}"


# --- end to end: apc → audio2landmark → generate ------------------------------------------------------

APC_CONFIG = {"hidden": 32, "layers": 2, "train": {"max_epochs": 3, "crop_frames": 100, "batch_size": 4}}
A2L_CONFIG = {"context": 8, "encoder_hidden": 32, "encoder_layers": 2, "hidden": 32,
              "train": {"max_epochs": 3, "crop_frames": 25, "batch_size": 4}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Six utterances of 1.2–2.2 s: tone bursts (on/off envelope) and ARKit clips whose mouth follows it."""
    folder = tmp_path_factory.mktemp("a2l_corpus")
    rng = np.random.default_rng(0)
    items = []
    for n in range(6):
        seconds = 1.2 + 0.2 * n
        t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        envelope = (np.sin(2 * np.pi * (1.5 + 0.3 * n) * t + n) > 0).astype(np.float32)
        audio = 0.4 * envelope * np.sin(2 * np.pi * (180 + 40 * n) * t) + 0.003 * rng.standard_normal(len(t))
        write_wav(folder / f"u{n}.wav", audio)
        frames = frames_for_duration(seconds, 25.0)
        frame_envelope = np.interp((np.arange(frames) + 0.5) / 25.0, t, envelope)
        arkit_clip(frames, frame_envelope).save(folder / f"u{n}.npz")
        items.append(CorpusItem(f"u{n}", "train" if n < 4 else "val", str(folder / f"u{n}.wav"),
                                str(folder / f"u{n}.npz")))
    return folder, items


@pytest.fixture(scope="module")
def apc_checkpoint(corpus):
    folder, items = corpus
    train("apc", items, folder / "apc.pt", config=APC_CONFIG, cache_dir=folder / "cache")
    return folder / "apc.pt"


def encoder_state(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith("encoder.")}


def test_init_from_copies_the_apc_encoder(apc_checkpoint):
    source = load_checkpoint(apc_checkpoint)
    torch.manual_seed(123)
    model = a2l.build(a2l.Config(**{k: v for k, v in A2L_CONFIG.items() if k != "train"}), (8, 80), 204, {})
    before = encoder_state(model)
    _init_from(model, source)
    after, wanted = encoder_state(model), encoder_state(source.model)
    assert after.keys() == wanted.keys() and len(after) == 2 * 4  # 2 GRU layers × (w_ih, w_hh, b_ih, b_hh)
    assert all(torch.equal(after[k], wanted[k]) for k in after)
    assert not any(torch.equal(before[k], after[k]) for k in after)


def test_apc_checkpoint_generates_no_motion(apc_checkpoint, corpus):
    _, items = corpus
    with pytest.raises(ValueError, match="no motion"):
        generate(apc_checkpoint, items[0].audio_path)


def test_train_frozen_from_apc_then_generate(apc_checkpoint, corpus):
    folder, items = corpus
    out = folder / "a2l_frozen.pt"
    trained = train("audio2landmark", items, out, config={**A2L_CONFIG, "freeze_encoder": True},
                    cache_dir=folder / "cache", init_from=apc_checkpoint)
    assert {h["stage"] for h in trained.history} == {"head"}
    # Frozen: the encoder is still exactly APC's after training.
    pretrained = encoder_state(load_checkpoint(apc_checkpoint).model)
    assert all(torch.equal(v, pretrained[k]) for k, v in encoder_state(trained.model).items())

    # Checkpoint round trip: the file loads to the same network.
    loaded = load_checkpoint(out)
    x = torch.randn(2, 9, 8, 80)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), trained.model(x), rtol=0, atol=0)

    audio = items[5].audio_path
    clip = generate(out, audio)
    with wave.open(audio) as w:
        seconds = w.getnframes() / w.getframerate()
    assert clip.layout == "landmarks:ibug68" and clip.head_pose is None and clip.fps == 25.0
    assert clip.n_frames == frames_for_duration(seconds, 25.0)
    assert clip.landmarks().shape == (clip.n_frames, 68, 3) and np.isfinite(clip.values).all()
    # Near the reference face: a few mm of motion, not garbage.
    reference = loaded.space["reference"]
    assert np.abs(clip.landmarks() - reference[None]).max() < 30.0
    np.testing.assert_array_equal(generate(out, audio).values, clip.values)  # deterministic
    # Batched with a different-length utterance: the same clip.
    batched = generate_many(out, [items[0].audio_path, audio])[1]
    np.testing.assert_allclose(batched.values, clip.values, atol=1e-4)


def test_fine_tuning_moves_the_encoder(apc_checkpoint, corpus):
    folder, items = corpus
    config = {**A2L_CONFIG, "freeze_encoder": False, "finetune_epochs": 2,
              "train": {**A2L_CONFIG["train"], "max_epochs": 1}}
    trained = train("audio2landmark", items, folder / "a2l_tuned.pt", config=config, cache_dir=folder / "cache",
                    init_from=apc_checkpoint)
    assert [h["stage"] for h in trained.history] == ["head", "finetune", "finetune"]
    pretrained = encoder_state(load_checkpoint(apc_checkpoint).model)
    tuned = encoder_state(trained.model)
    assert any(not torch.equal(v, pretrained[k]) for k, v in tuned.items())
