"""Tests for the APC speech encoder (inference/models/apc.py): its shifted, masked L1 loss, causality and
length contracts, that it learns (overfits a tiny batch; beats copying the current frame on a gliding tone
it has not seen) and that its features use the same mel analysis as `mel_slices`.

Audio is made here with numpy (tones whose pitch glides up and down); most tests call the modules directly
on small tensors. The end-to-end train → generate path is in test_model_audio2landmark.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from inference import features as feats
from inference.audio import SAMPLE_RATE
from inference.models import apc, recipe


def small_config(**overrides) -> apc.Config:
    return apc.Config(**{"hidden": 32, "layers": 2, **overrides})


def glide(seconds: float, low_hz: float, high_hz: float, sweeps: float) -> np.ndarray:
    """A tone whose pitch glides between two frequencies and back (log-frequency triangle), `sweeps` times:
    the next frames follow from the direction of the last ones, which copying the current frame ignores."""
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    position = (t * sweeps / seconds) % 1.0
    triangle = 1 - 2 * np.abs(position - 0.5)
    hz = low_hz * (high_hz / low_hz) ** triangle
    return (0.5 * np.sin(2 * np.pi * np.cumsum(hz) / SAMPLE_RATE)).astype(np.float32)


# --- the loss ------------------------------------------------------------------------------------------


def test_loss_compares_the_prediction_at_t_with_the_frame_shift_steps_later():
    frames = torch.arange(10, dtype=torch.float32).reshape(1, 10, 1).repeat(1, 1, 4)
    mask = torch.ones(1, 10, dtype=torch.bool)
    perfect = torch.cat([frames[:, 3:], torch.full((1, 3, 4), 99.0)], dim=1)  # tail: nothing to predict
    assert apc.apc_loss(perfect, frames, mask, shift=3).item() == 0.0
    # Predicting the current frame is off by exactly `shift` everywhere.
    assert apc.apc_loss(frames, frames, mask, shift=3).item() == pytest.approx(3.0)
    assert apc.apc_loss(frames, frames, mask, shift=1).item() == pytest.approx(1.0)


def test_loss_ignores_targets_in_the_padding():
    frames = torch.zeros(2, 8, 3)
    frames[1, 5:] = 100.0                       # row 1 is 5 frames long; its padding holds garbage
    mask = torch.arange(8)[None, :] < torch.tensor([[8], [5]])
    pred = torch.ones(2, 8, 3)                  # 1 away from every real target
    assert apc.apc_loss(pred, frames, mask, shift=2).item() == pytest.approx(1.0)


def test_loss_of_an_utterance_shorter_than_the_shift_is_zero_and_finite():
    x = torch.randn(1, 2, 80, requires_grad=True)
    loss = apc.apc_loss(x * 2, x.detach(), torch.ones(1, 2, dtype=torch.bool), shift=3)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(x.grad).all()


# --- shapes, causality, padding, determinism ----------------------------------------------------------


@pytest.mark.parametrize("T", [1, 7, 161])
def test_output_is_one_predicted_frame_per_input_frame(T):
    torch.manual_seed(0)
    model = apc.build(small_config(), 80, 80, {}).eval()
    with torch.no_grad():
        out = apc.predict(model, small_config(), torch.randn(2, T, 80), torch.tensor([T, T]), seeds=[0, 0])
    assert out.shape == (2, T, 80) and torch.isfinite(out).all()


def test_the_encoder_is_causal():
    torch.manual_seed(0)
    model = apc.build(small_config(), 80, 80, {}).eval()
    x = torch.randn(1, 40, 80)
    changed = x.clone()
    changed[:, 25:] = torch.randn(1, 15, 80)
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert torch.equal(a[:, :25], b[:, :25])
    assert not torch.allclose(a[:, 25:], b[:, 25:])


def test_a_padded_batch_gives_each_row_what_it_gives_alone():
    torch.manual_seed(0)
    cfg = small_config()
    model = apc.build(cfg, 80, 80, {}).eval()
    lengths = [161, 7, 1]
    rows = [torch.randn(1, T, 80) for T in lengths]
    batch = torch.cat([torch.cat([r, r[:, -1:].expand(1, 161 - r.shape[1], 80)], dim=1) for r in rows])
    with torch.no_grad():
        together = apc.predict(model, cfg, batch, torch.tensor(lengths), seeds=[0, 0, 0])
        for i, row in enumerate(rows):
            alone = apc.predict(model, cfg, row, torch.tensor([row.shape[1]]), seeds=[0])
            torch.testing.assert_close(together[i, :row.shape[1]], alone[0], rtol=1e-5, atol=1e-5)


def test_same_seed_same_network_and_same_output():
    x = torch.randn(1, 30, 80)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = apc.build(small_config(), 80, 80, {}).eval()
        with torch.no_grad():
            outs.append(model(x))
    assert torch.equal(outs[0], outs[1])


def test_the_gru_lives_at_model_encoder_for_init_from():
    model = apc.build(apc.Config(), 80, 80, {})
    encoder_names = [n for n, _ in model.named_parameters() if n.startswith("encoder.")]
    assert encoder_names and all(n.startswith(("encoder.", "predictor.")) for n, _ in model.named_parameters())
    assert isinstance(model.encoder, apc.APCEncoder) and len(model.encoder.layers) == apc.Config().layers


def test_recipe_contract():
    rec = recipe("apc")
    cfg = rec.Config()
    assert cfg.fps == 100 and cfg.shift == 3
    spec = rec.feature_spec(cfg)
    assert (spec.kind, spec.fps, spec.param("n_mels")) == ("logmel", 100.0, 80)
    assert rec.targets(cfg, rec.fit_space(cfg, []), None) is None
    with pytest.raises(ValueError, match="no motion"):
        rec.to_clip(cfg, {}, np.zeros((5, 80), np.float32), 100.0)
    with pytest.raises(ValueError, match="one feature vector per frame"):
        rec.build(cfg, (32, 80), 80, {})


def test_its_log_mel_is_the_analysis_of_mel_slices():
    """APC is pre-trained on logmel and its encoder then reads mel_slices: the two must be the same
    spectra. mel_slices' fine frame j is centred at j·10 ms, logmel's row i at (i + ½)·10 ms, so logmel of
    the signal delayed by 5 ms has row i = fine frame i = the first of mel_slices(fps=100, context=2) row i.
    (Context 2 puts each slice's middle half a hop from a fine frame; an odd context would sit on a tie.)"""
    samples = glide(1.0, 150.0, 3000.0, 2)
    delayed = np.concatenate([np.zeros(SAMPLE_RATE // 200, np.float32), samples])
    logmel = feats.extract(delayed, apc.feature_spec(apc.Config()))
    slices = feats.extract(samples, feats.FeatureSpec("mel_slices", 100, {"context": 2}))
    np.testing.assert_allclose(logmel[:90], slices[:90, 0], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(logmel[1:91], slices[:90, 1], rtol=1e-4, atol=1e-3)
    # The logmel kind's own default (64 ms window) would not match: the reason for Config.window_s.
    default = feats.extract(delayed, feats.FeatureSpec("logmel", 100))
    assert np.abs(default[:90] - slices[:90, 0]).mean() > 0.5


# --- learning ------------------------------------------------------------------------------------------


def _train(model, batches, steps, lr=3e-3, shift=3):
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        x = batches(step)
        loss = apc.apc_loss(model(x), x, torch.ones(x.shape[:2], dtype=torch.bool), shift)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="module")
def glide_features():
    spec = apc.feature_spec(apc.Config())
    train = [feats.extract(glide(3.0, 200.0 + 50 * k, 2500.0 - 100 * k, 2 + k % 2), spec) for k in range(4)]
    held_out = feats.extract(glide(3.0, 300.0, 2000.0, 3), spec)
    norm = feats.Normalizer.fit(train)
    return torch.from_numpy(np.stack([norm.apply(a) for a in train])), torch.from_numpy(norm.apply(held_out))[None]


def test_overfits_a_tiny_batch(glide_features):
    train, _ = glide_features
    batch = train[:2, :60]
    torch.manual_seed(0)
    losses = _train(apc.build(small_config(), 80, 80, {}), lambda step: batch, steps=150)
    assert losses[-1] < 0.2 * losses[0], f"L1 went from {losses[0]:.3f} to {losses[-1]:.3f}"


def test_predicts_a_gliding_tone_better_than_copying_the_current_frame(glide_features):
    train, held_out = glide_features
    rng = np.random.default_rng(0)
    starts = rng.integers(0, train.shape[1] - 80, size=160)
    torch.manual_seed(0)
    cfg = apc.Config()  # the default (demo) size
    model = apc.build(cfg, 80, 80, {})
    _train(model, lambda step: train[:, starts[step]:starts[step] + 80], steps=160, lr=2e-3)
    model.eval()
    mask = torch.ones(held_out.shape[:2], dtype=torch.bool)
    with torch.no_grad():
        learned = apc.apc_loss(model(held_out), held_out, mask, cfg.shift).item()
    copying = apc.apc_loss(held_out, held_out, mask, cfg.shift).item()  # "frame t + 3 looks like frame t"
    assert learned < 0.6 * copying, f"APC L1 {learned:.3f} vs copying {copying:.3f}"
