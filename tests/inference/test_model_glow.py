"""The conditional Glow (Jonell et al. 2020, after MoGlow): each layer and the whole flow invert exactly,
their log-determinants match brute-force Jacobians, the density integrates to one, padding changes nothing,
the likelihood can be overfitted, sampling is seeded and seamless, and one small run goes from WAV files
to a generated clip with head pose."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.io.wavfile
import torch
from torch.autograd.functional import jacobian

from inference.generate import generate, generate_many
from inference.layouts import ARKIT52
from inference.models.glow import (RECIPE, ActNorm, AffineCoupling, ConditionalGlow, Config, FlowStep, InvConv1x1,
                                   build, crossfade_weights, fit_space, log_likelihood, overlap_add, predict,
                                   stages, targets, to_clip, window_starts)
from inference.motion import MotionClip
from inference.training import CorpusItem, load_checkpoint, train

SPEECH = 6     # speech feature channels in the module tests (the real model reads 80 log-mel bands)
FPS = 25.0
SAMPLE_RATE = 16000


def _cfg(**overrides) -> Config:
    small = dict(window=16, steps=3, hidden=16, speech_hidden=8, speech_layers=2)
    return Config(**{**small, **overrides})


def _randomised(module: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """Non-trivial weights everywhere (the couplings' zero-initialised last layers included), ActNorm marked
    initialised, float64, eval mode."""
    g = torch.Generator().manual_seed(seed)
    module = module.double().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for m in module.modules():
            if isinstance(m, ActNorm):
                m.initialised.fill_(True)
    return module


def _flow(D: int, seed: int = 0, scale: float = 0.1, **overrides) -> ConditionalGlow:
    torch.manual_seed(seed)
    return _randomised(ConditionalGlow(SPEECH, D, _cfg(**overrides)), seed, scale)


def _layer(kind: str, D: int, seed: int = 0):
    torch.manual_seed(seed)
    cfg = _cfg()
    layer = {"actnorm": lambda: ActNorm(D), "invconv": lambda: InvConv1x1(D),
             "coupling": lambda: AffineCoupling(D, 4, cfg), "step": lambda: FlowStep(D, 4, cfg)}[kind]()
    return _randomised(layer, seed)


def _channels_first(B, D, T, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, T, generator=g, dtype=dtype)
    cond = torch.randn(B, 4, T, generator=g, dtype=dtype)
    return x, cond, torch.ones(B, 1, T, dtype=dtype)


def _learnable_batch(B=4, T=32, D=4, seed=0) -> dict:
    """Motion that is a smooth function of the speech plus a little noise, so a conditional flow can fit it."""
    g = torch.Generator().manual_seed(seed)
    speech = torch.randn(B, T, SPEECH, generator=g)
    smooth = torch.nn.functional.avg_pool1d(speech.transpose(1, 2), 5, stride=1, padding=2).transpose(1, 2)
    motion = torch.tanh(smooth @ torch.randn(SPEECH, D, generator=g)) + 0.05 * torch.randn(B, T, D, generator=g)
    motion = (motion - motion.mean(dim=(0, 1))) / motion.std(dim=(0, 1))
    return {"x": speech, "y": motion, "lengths": torch.full((B,), T), "mask": torch.ones(B, T, dtype=torch.bool)}


# --- invertibility -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["actnorm", "invconv", "coupling", "step"])
@pytest.mark.parametrize("D", [1, 2, 3, 5])
def test_each_layer_inverts_exactly(kind, D):
    layer = _layer(kind, D)
    x, cond, m = _channels_first(2, D, 9)
    z, logdet = layer(x, cond, m)
    assert logdet.shape == (2, 9)
    assert (z - x).abs().max() > 1e-3  # the layer does something
    assert (layer.reverse(z, cond, m) - x).abs().max() < 1e-10


@pytest.mark.parametrize("D", [1, 3, 12])
def test_whole_flow_inverts_in_float64_and_float32(D):
    flow = _flow(D)
    g = torch.Generator().manual_seed(3)
    motion = torch.randn(3, 21, D, generator=g, dtype=torch.float64)
    speech = torch.randn(3, 21, SPEECH, generator=g, dtype=torch.float64)
    mask = torch.arange(21)[None, :] < torch.tensor([21, 13, 1])[:, None]
    z, _ = flow(motion, speech, mask)
    assert (flow.reverse(z, speech, mask) - motion).abs().max() < 1e-10
    flow32 = flow.float()
    z32, _ = flow32(motion.float(), speech.float(), mask)
    assert (flow32.reverse(z32, speech.float(), mask) - motion.float()).abs().max() < 1e-4


# --- log-determinants against brute force --------------------------------------------------------------


def _brute_logdet(fn, x: torch.Tensor) -> float:
    J = jacobian(lambda flat: fn(flat.reshape(x.shape)).reshape(-1), x.reshape(-1))
    sign, logabsdet = torch.linalg.slogdet(J)
    assert sign != 0
    return float(logabsdet)


@pytest.mark.parametrize("kind", ["actnorm", "invconv", "coupling", "step"])
def test_each_layers_logdet_is_the_log_abs_det_of_its_jacobian(kind):
    layer = _layer(kind, 3)
    x, cond, m = _channels_first(1, 3, 4)
    _, logdet = layer(x, cond, m)
    assert float(logdet.detach().sum()) == pytest.approx(_brute_logdet(lambda v: layer(v, cond, m)[0], x), abs=1e-9)


@pytest.mark.parametrize("D", [1, 3])
def test_flow_logdet_is_the_log_abs_det_of_its_jacobian(D):
    flow = _flow(D)  # D = 3, window = 4: a 12 × 12 Jacobian
    g = torch.Generator().manual_seed(5)
    motion = torch.randn(1, 4, D, generator=g, dtype=torch.float64)
    speech = torch.randn(1, 4, SPEECH, generator=g, dtype=torch.float64)
    _, logdet = flow(motion, speech)
    brute = _brute_logdet(lambda v: flow(v, speech)[0], motion)
    assert abs(brute) > 0.5  # not a volume-preserving map, so the test can tell
    assert float(logdet.detach().sum()) == pytest.approx(brute, abs=1e-9)


def test_with_a_mask_the_valid_frames_logdet_is_that_of_their_own_jacobian():
    flow = _flow(3)
    g = torch.Generator().manual_seed(6)
    motion = torch.randn(1, 7, 3, generator=g, dtype=torch.float64)
    speech = torch.randn(1, 7, SPEECH, generator=g, dtype=torch.float64)
    mask = torch.arange(7)[None, :] < 4
    _, logdet = flow(motion, speech, mask)

    def valid_only(v):
        full = torch.cat([v, motion[:, 4:]], dim=1)
        return flow(full, speech, mask)[0][:, :4]

    assert float(logdet[:, :4].detach().sum()) == pytest.approx(_brute_logdet(valid_only, motion[:, :4]), abs=1e-9)


@pytest.mark.parametrize("D", [1, 2])
def test_the_density_integrates_to_one(D):
    """A single frame's density p(x | speech) over a grid: an independent check of prior + log-dets."""
    flow = _flow(D, seed=2, scale=0.2)
    speech = torch.randn(1, 1, SPEECH, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    # Where the mass lies: push z-samples through the inverse flow.
    z = torch.randn(4000, 1, D, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    with torch.no_grad():
        samples = flow.reverse(z, speech.expand(4000, 1, SPEECH))[:, 0]
    lo, hi = samples.min(0).values - 6 * samples.std(0), samples.max(0).values + 6 * samples.std(0)
    n = 20001 if D == 1 else 301
    axes = [torch.linspace(float(lo[d]), float(hi[d]), n, dtype=torch.float64) for d in range(D)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 1, D)
    with torch.no_grad():
        density = torch.exp(flow.log_prob(grid, speech.expand(len(grid), 1, SPEECH)))
    cell = math.prod(float(a[1] - a[0]) for a in axes)
    assert float(density.sum()) * cell == pytest.approx(1.0, abs=2e-3)


# --- masking and the loss ------------------------------------------------------------------------------


@torch.no_grad()
def test_padding_changes_neither_the_likelihood_nor_the_loss():
    flow = _flow(4)
    g = torch.Generator().manual_seed(9)
    lengths = [20, 11, 1]
    motion = torch.randn(3, 20, 4, generator=g, dtype=torch.float64)
    speech = torch.randn(3, 20, SPEECH, generator=g, dtype=torch.float64)
    mask = torch.arange(20)[None, :] < torch.tensor(lengths)[:, None]
    together = flow.log_prob(motion, speech, mask)
    for b, n in enumerate(lengths):
        alone = flow.log_prob(motion[b:b + 1, :n], speech[b:b + 1, :n])
        assert float(together[b]) == pytest.approx(float(alone[0]), abs=1e-9)
    loss = stages(_cfg())[0].loss
    batch = {"x": speech, "y": motion, "mask": mask, "lengths": torch.tensor(lengths)}
    junk = {**batch, "x": torch.where(mask[..., None], speech, 1e3), "y": torch.where(mask[..., None], motion, -1e3)}
    assert float(loss(flow, junk)[0]) == pytest.approx(float(loss(flow, batch)[0]), abs=1e-9)
    # The loss is the mean NLL per valid frame and channel.
    assert float(loss(flow, batch)[0]) == pytest.approx(-float(together.sum()) / (sum(lengths) * 4), abs=1e-9)


def test_actnorm_starts_from_the_first_batchs_valid_frames_only():
    torch.manual_seed(0)
    flow = ConditionalGlow(SPEECH, 3, _cfg()).train()
    g = torch.Generator().manual_seed(10)
    motion = 4.0 + 3.0 * torch.randn(2, 30, 3, generator=g)
    motion[1, 20:] = 1e4  # padding with wild values
    mask = torch.arange(30)[None, :] < torch.tensor([30, 20])[:, None]
    first = flow.steps[0].layers[0]
    assert not bool(first.initialised)
    flow(motion, torch.randn(2, 30, SPEECH, generator=g), mask)
    assert bool(first.initialised)
    out = first(motion.transpose(1, 2), None, mask[:, None].float())[0].transpose(1, 2)[mask]
    torch.testing.assert_close(out.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std(0, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    bias = first.bias.detach().clone()
    flow(motion * 2, torch.randn(2, 30, SPEECH, generator=g), mask)  # later batches do not re-initialise
    torch.testing.assert_close(first.bias.detach(), bias)


def test_a_fresh_step_is_near_the_identity_after_actnorm_and_rotation():
    """The couplings' zero-initialised last layers give t = 0 and s = sigmoid(2) (lifted by the floor
    min_scale) at every frame."""
    torch.manual_seed(0)
    coupling = AffineCoupling(4, 3, _cfg(min_scale=0.1))
    x, _, m = _channels_first(2, 4, 9, dtype=torch.float32)
    z, logdet = coupling(x, torch.randn(2, 3, 9), m)
    s = 0.1 + 0.9 / (1 + math.exp(-2))
    torch.testing.assert_close(z[:, :2], x[:, :2])
    torch.testing.assert_close(z[:, 2:], x[:, 2:] * s)
    torch.testing.assert_close(logdet, torch.full((2, 9), 2 * math.log(s)))


def test_nll_falls_when_overfitting_a_tiny_batch():
    torch.manual_seed(0)
    flow = ConditionalGlow(SPEECH, 4, _cfg(hidden=32, speech_hidden=16)).train()
    batch = _learnable_batch()
    loss_fn = stages(_cfg())[0].loss
    optimiser = torch.optim.Adam(flow.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        loss, info = loss_fn(flow, batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    # A standard normal fit of unit-variance data is 1.42 nats per channel; the motion is nearly a function
    # of the speech, so a conditional flow must do far better.
    assert 1.2 < losses[0] < 1.6
    assert losses[-1] < losses[0] - 1.5
    # ... and it uses the speech: the same motion under another row's speech is much less likely.
    flow.eval()
    with torch.no_grad():
        right = flow.log_prob(batch["y"], batch["x"]).mean()
        wrong = flow.log_prob(batch["y"], batch["x"].roll(1, dims=0)).mean()
    assert right > wrong + 32 * 4 * 0.5


@torch.no_grad()
def test_training_noise_enters_the_training_loss_only():
    flow = _flow(3).float()
    batch = _learnable_batch(D=3)
    loss = stages(_cfg(train_noise=0.05))[0].loss
    flow.eval()
    assert float(loss(flow, batch)[0]) == float(loss(flow, batch)[0])
    flow.train()
    assert float(loss(flow, batch)[0]) != float(loss(flow, batch)[0])
    assert float(stages(_cfg(train_noise=0.0))[0].loss(flow, batch)[0]) == pytest.approx(
        float(loss(flow.eval(), batch)[0]), abs=1e-6)


def test_the_coupling_scale_has_a_floor_so_the_inverse_cannot_explode():
    """However far the coupling net is pushed, z → x grows a channel by at most 1 / min_scale per step."""
    torch.manual_seed(0)
    coupling = AffineCoupling(2, 3, _cfg(min_scale=0.05)).double()
    with torch.no_grad():
        coupling.net.layers[-1].bias[1:] = -1e4  # raw log-scale pre-activation: sigmoid(h + 2) is 0
    z, _, m = _channels_first(1, 2, 9)
    x = coupling.reverse(z, torch.zeros(1, 3, 9, dtype=torch.float64), m)
    torch.testing.assert_close(x[:, 1:], z[:, 1:] / 0.05)
    _, logdet = coupling(x, torch.zeros(1, 3, 9, dtype=torch.float64), m)
    torch.testing.assert_close(logdet, torch.full((1, 9), math.log(0.05), dtype=torch.float64))


def test_log_likelihood_reports_per_frame_nats_in_either_unit():
    flow = _flow(3).float()
    g = torch.Generator().manual_seed(11)
    motion, speech = torch.randn(2, 12, 3, generator=g), torch.randn(2, 12, SPEECH, generator=g)
    mask = torch.arange(12)[None, :] < torch.tensor([12, 5])[:, None]
    frames = log_likelihood(flow, _cfg(), motion, speech, mask)
    assert frames.shape == (2, 12) and bool((frames[1, 5:] == 0).all())
    torch.testing.assert_close(frames.sum(1), flow.log_prob(motion, speech, mask).detach())
    std = np.array([2.0, 0.5, 10.0])
    scaled = log_likelihood(flow, _cfg(), motion, speech, mask, target_std=std)
    torch.testing.assert_close(frames - scaled, mask.float() * float(np.log(std).sum()))
    assert RECIPE.extras["log_likelihood"] is log_likelihood


# --- generation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 16, 17, 40, 161])
def test_windows_cover_every_frame_with_half_overlap(n):
    starts = window_starts(n, 16)
    assert starts[0] == 0 and starts[-1] + 16 >= n
    assert all(b - a == 8 for a, b in zip(starts, starts[1:]))
    assert starts[-1] < max(n - 8, 1)  # no window lies wholly past the end


def test_crossfade_weights_of_neighbours_sum_to_one_and_never_vanish():
    w = crossfade_weights(16)
    assert float(w.min()) > 0
    torch.testing.assert_close(w[8:] + w[:8], torch.ones(8, dtype=w.dtype))


@pytest.mark.parametrize("n", [1, 7, 16, 17, 40, 161])
def test_overlap_add_of_a_constant_stays_constant_and_a_signal_is_rebuilt(n):
    W = 16
    starts = window_starts(n, W)
    span = starts[-1] + W
    valid = torch.stack([torch.arange(s, s + W) < n for s in starts])
    constant = torch.full((len(starts), W, 2), 0.7, dtype=torch.float64)
    torch.testing.assert_close(overlap_add(constant, starts, n, valid), torch.full((n, 2), 0.7, dtype=torch.float64))
    # Windows cut from one signal fade back into that signal: no seams.
    signal = torch.sin(torch.arange(span, dtype=torch.float64) / 3)[:, None]
    windows = torch.stack([signal[s:s + W] for s in starts])
    torch.testing.assert_close(overlap_add(windows, starts, n, valid), signal[:n])


def test_window_seams_leave_no_trace_in_sampled_motion():
    """Speech that never changes and temperature 0: away from the utterance's ends the motion must hold the
    flow's steady response, though each window's own edges (zero-padded convolutions) stray from it."""
    cfg = _cfg(window=32)
    flow = _flow(3).float()
    with torch.no_grad():
        steady = flow.reverse(torch.zeros(1, 400, 3), torch.zeros(1, 400, SPEECH))[0, 200]
        one_window = flow.reverse(torch.zeros(1, 32, 3), torch.zeros(1, 32, SPEECH))[0]
    assert float((one_window - steady).abs().max()) > 0.05  # the seams the cross-fade must hide
    out = predict(flow, cfg, torch.zeros(1, 300, SPEECH), torch.tensor([300]), seeds=[0], temperature=0.0)[0]
    assert float((out[16:-16] - steady).abs().max()) < 2e-3


def test_temperature_zero_gives_the_mean_path_whatever_the_seed():
    cfg = _cfg()
    flow = _flow(3).float()
    speech = torch.randn(1, 16, SPEECH, generator=torch.Generator().manual_seed(12))
    a = predict(flow, cfg, speech, torch.tensor([16]), seeds=[0], temperature=0.0)
    b = predict(flow, cfg, speech, torch.tensor([16]), seeds=[123], temperature=0.0)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    with torch.no_grad():
        mean_path = flow.reverse(torch.zeros(1, 16, 3), speech)
    torch.testing.assert_close(a, mean_path)
    long = torch.randn(1, 90, SPEECH, generator=torch.Generator().manual_seed(13))
    torch.testing.assert_close(predict(flow, cfg, long, torch.tensor([90]), seeds=[0], temperature=0.0),
                               predict(flow, cfg, long, torch.tensor([90]), seeds=[9], temperature=0.0), atol=0, rtol=0)


def test_seeds_reproduce_and_different_seeds_differ():
    cfg = _cfg()
    flow = _flow(3).float()
    speech = torch.randn(2, 50, SPEECH, generator=torch.Generator().manual_seed(14))
    lengths = torch.tensor([50, 50])
    a = predict(flow, cfg, speech, lengths, seeds=[1, 2], temperature=0.8)
    b = predict(flow, cfg, speech, lengths, seeds=[1, 2], temperature=0.8)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    c = predict(flow, cfg, speech, lengths, seeds=[3, 2], temperature=0.8)
    assert (a[0] - c[0]).abs().mean() > 0.05
    torch.testing.assert_close(a[1], c[1], atol=1e-5, rtol=1e-4)
    # Higher temperature, wider spread around the mean path.
    mean = predict(flow, cfg, speech, lengths, seeds=[1, 2], temperature=0.0)
    hot = predict(flow, cfg, speech, lengths, seeds=[1, 2], temperature=1.0)
    assert (hot - mean).abs().mean() > (predict(flow, cfg, speech, lengths, seeds=[1, 2], temperature=0.3)
                                        - mean).abs().mean()


@pytest.mark.parametrize("T", [1, 7, 161])
def test_predict_gives_finite_motion_of_any_length_at_the_default_size(T):
    torch.manual_seed(0)
    cfg = Config()
    flow = ConditionalGlow(80, 11, cfg).eval()
    out = predict(flow, cfg, torch.randn(2, T, 80), torch.tensor([T, T]), seeds=[0, 1])
    assert out.shape == (2, T, 11)
    assert torch.isfinite(out).all()


def test_a_padded_batch_gives_each_row_what_it_gives_alone():
    cfg = _cfg()
    flow = _flow(3).float()
    lengths = [161, 7, 1, 50, 16]
    g = torch.Generator().manual_seed(15)
    xs = [torch.randn(n, SPEECH, generator=g) for n in lengths]
    batch = torch.full((len(xs), max(lengths), SPEECH), 5.0)  # junk padding must not matter
    for i, x in enumerate(xs):
        batch[i, :len(x)] = x
    together = predict(flow, cfg, batch, torch.tensor(lengths), seeds=[7, 8, 9, 10, 11])
    assert together.shape == (5, 161, 3)
    for i, x in enumerate(xs):
        alone = predict(flow, cfg, x[None], torch.tensor([len(x)]), seeds=[7 + i])[0]
        torch.testing.assert_close(together[i, :len(x)], alone, atol=1e-5, rtol=1e-4)


# --- the target space ----------------------------------------------------------------------------------


def _clip(T: int, seed: int, *, head=True) -> MotionClip:
    rng = np.random.default_rng(seed)
    values = np.full((T, len(ARKIT52)), 0.1, np.float32)
    t = np.arange(T) / FPS
    values[:, ARKIT52.index("browInnerUp")] = 0.3 + 0.2 * np.sin(2 * np.pi * 0.7 * t + seed)
    values[:, ARKIT52.index("eyeBlinkLeft")] = rng.uniform(0, 1, T) > 0.9
    values[:, ARKIT52.index("eyeLookUpLeft")] = rng.uniform(0, 1, T)     # gaze: not the model's business
    values[:, ARKIT52.index("jawOpen")] = rng.uniform(0, 1, T)           # lower face: by default, yes
    values[:, ARKIT52.index("cheekPuff")] = rng.uniform(0, 1, T)         # cheeks: not a chosen prefix
    pose = None
    if head:
        pose = np.zeros((T, 6), np.float32)
        pose[:, 0] = 5 * np.sin(2 * np.pi * 0.3 * t + seed)
        pose[:, 1] = 2.0  # a head that never turns
        pose[:, 2] = rng.normal(0, 1, T)
        pose[:, 3:] = 10.0
    return MotionClip(fps=FPS, layout="arkit52", values=values, head_pose=pose)


def test_space_takes_the_moving_brows_blinks_and_head_rotations():
    clips = [_clip(50, s) for s in range(3)]
    space = fit_space(Config(), clips)
    assert sorted(ARKIT52[i] for i in space["regions"]["upper"]) == ["browInnerUp", "eyeBlinkLeft"]
    assert [ARKIT52[i] for i in space["regions"]["lower"]] == ["jawOpen"] and "middle" not in space["regions"]
    assert space["head"] == [0, 2]
    y = targets(Config(), space, clips[0])
    assert y.shape == (50, 5)
    np.testing.assert_allclose(y[:, 3:], clips[0].head_pose[:, [0, 2]])
    paper = fit_space(Config(face_channels=("brow", "eyeBlink", "eyeWide", "eyeSquint")), clips)
    assert set(paper["regions"]) == {"upper"}
    back = to_clip(Config(), space, y, FPS)
    assert back.layout == "arkit52" and back.n_frames == 50
    np.testing.assert_allclose(back.values[:, ARKIT52.index("browInnerUp")], clips[0].values[:, ARKIT52.index("browInnerUp")])
    np.testing.assert_allclose(back.values[:, ARKIT52.index("jawOpen")], clips[0].values[:, ARKIT52.index("jawOpen")])
    all_cheek = np.concatenate([c.values[:, ARKIT52.index("cheekPuff")] for c in clips])
    np.testing.assert_allclose(back.values[:, ARKIT52.index("cheekPuff")], all_cheek.mean(), rtol=1e-5)
    np.testing.assert_allclose(back.head_pose[:, [0, 2]], clips[0].head_pose[:, [0, 2]])
    np.testing.assert_allclose(back.head_pose[:, 1], 2.0)
    assert (back.head_pose[:, 3:] == 0).all()


def test_clips_without_head_pose_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="no head pose"):
        fit_space(Config(), [_clip(30, 0), _clip(30, 1, head=False)])
    space = fit_space(Config(), [_clip(30, 0)])
    with pytest.raises(ValueError, match="head pose"):
        targets(Config(), space, _clip(30, 1, head=False))


def test_build_checks_the_target_width():
    space = fit_space(Config(), [_clip(30, 0)])
    assert isinstance(build(Config(), 80, 5, space), ConditionalGlow)
    with pytest.raises(ValueError, match="5 channels"):
        build(Config(), 80, 4, space)


# --- from WAV files to a clip --------------------------------------------------------------------------


def _corpus(tmp_path, n=10) -> list[CorpusItem]:
    """Tones switched on and off; brows and nods follow the loudness, blinks fall in the pauses."""
    items = []
    for i in range(n):
        rng = np.random.default_rng(i)
        duration = 2.0 + 0.4 * (i % 4)
        T = int(round(duration * FPS))
        envelope = (np.sin(2 * np.pi * (0.6 + 0.1 * i) * np.arange(T) / FPS + i) > 0).astype(np.float32)
        t = np.arange(int(duration * SAMPLE_RATE)) / SAMPLE_RATE
        loud = np.repeat(envelope, SAMPLE_RATE / FPS)[:len(t)]
        audio = 0.3 * np.sin(2 * np.pi * (180 + 20 * i) * t) * loud + 0.003 * rng.normal(size=len(t))
        wav = tmp_path / f"u{i}.wav"
        scipy.io.wavfile.write(wav, SAMPLE_RATE, (audio * 32767).astype(np.int16))
        values = np.zeros((T, len(ARKIT52)), np.float32)
        values[:, ARKIT52.index("browInnerUp")] = 0.1 + 0.5 * envelope
        values[:, ARKIT52.index("browOuterUpLeft")] = 0.05 + 0.3 * envelope
        values[:, ARKIT52.index("eyeBlinkLeft")] = (1 - envelope) * (rng.uniform(size=T) > 0.8)
        values[:, ARKIT52.index("jawOpen")] = 0.4 * envelope
        pose = np.zeros((T, 6), np.float32)
        pose[:, 0] = 6 * envelope + rng.normal(0, 0.3, T)
        pose[:, 1] = rng.normal(0, 1, T)
        pose[:, 2] = rng.normal(0, 1, T)
        motion = tmp_path / f"u{i}.npz"
        MotionClip(fps=FPS, layout="arkit52", values=values, head_pose=pose).save(motion)
        items.append(CorpusItem(f"u{i}", "val" if i >= n - 2 else "train", str(wav), str(motion)))
    return items


def test_train_then_generate_from_a_checkpoint(tmp_path):
    items = _corpus(tmp_path)
    config = {"window": 32, "steps": 3, "hidden": 32, "speech_hidden": 16,
              "train": {"max_epochs": 4, "crop_frames": 32, "batch_size": 4}}
    trained = train("glow", items, tmp_path / "glow.pt", config=config, cache_dir=tmp_path / "cache")
    assert trained.config.train.crop_frames == 32 and trained.config.window == 32
    assert len(trained.history) == 4 and all(math.isfinite(h["val_loss"]) for h in trained.history)
    assert trained.history[-1]["train_loss"] < trained.history[0]["train_loss"]
    assert all(bool(m.initialised) for m in trained.model.modules() if isinstance(m, ActNorm))
    clip = generate(tmp_path / "glow.pt", items[-1].audio_path, seed=3)
    assert clip.layout == "arkit52" and clip.n_frames == int(round(2.4 * FPS))
    assert clip.head_pose.shape == (clip.n_frames, 6) and (clip.head_pose[:, 3:] == 0).all()
    assert np.isfinite(clip.values).all() and clip.values.min() >= 0 and clip.values.max() <= 1
    assert clip.head_pose[:, 0].std() > 0  # the nod is generated, not held still
    assert clip.metadata["seed"] == 3 and clip.metadata["model"] == "glow"
    # The checkpoint round-trips: the model loaded again samples the same motion, and seeds matter.
    again = generate(load_checkpoint(tmp_path / "glow.pt"), items[-1].audio_path, seed=3)
    np.testing.assert_array_equal(again.values, clip.values)
    np.testing.assert_array_equal(again.head_pose, clip.head_pose)
    other = generate(trained, items[-1].audio_path, seed=4)
    assert not np.allclose(other.head_pose, clip.head_pose)
    clips = generate_many(trained, [items[-1].audio_path, items[0].audio_path], seed=3)
    np.testing.assert_allclose(clips[0].head_pose, clip.head_pose, atol=1e-4)
    # Held-out exact log-likelihood, per frame, from the loaded model.
    from inference.features import extract_cached
    x = trained.feature_norm.apply(extract_cached(items[-1].audio_path, trained.feature_spec,
                                                  cache_dir=tmp_path / "cache", n_frames=clip.n_frames))
    y = trained.target_norm.apply(targets(trained.config, trained.space, MotionClip.load(items[-1].motion_path)))
    frames = log_likelihood(trained.model, trained.config, torch.from_numpy(y)[None], torch.from_numpy(x)[None],
                            target_std=trained.target_norm.std)
    assert frames.shape == (1, clip.n_frames) and torch.isfinite(frames).all()
