"""The training loop: seeded runs reproduce, an interrupted run resumes to the same weights, early stopping
stops, checkpoints carry everything needed to generate, and bad input is refused clearly."""
import numpy as np
import pytest

from tests.inference.wavs import write_wav
import torch

from inference.layouts import ARKIT52
from inference.motion import MotionClip
from inference.training import CorpusItem, TrainingError, load_checkpoint, train

SR = 16000


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    """Eight short 'utterances': a tone switched on and off; the jaw opens while it sounds."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    out = []
    for i in range(8):
        seconds = 1.2 + 0.2 * i
        t = np.arange(int(SR * seconds)) / SR
        on = (np.sin(2 * np.pi * (1.3 + 0.2 * i) * t) > 0).astype(np.float32)
        audio = on * 0.3 * np.sin(2 * np.pi * 180 * t) + 0.003 * rng.standard_normal(len(t))
        wav = folder / f"u{i}.wav"
        write_wav(wav, audio)
        frames = round(seconds * 25)
        centres = (np.arange(frames) + 0.5) / 25
        values = np.zeros((frames, 52), np.float32)
        values[:, ARKIT52.index("jawOpen")] = 0.7 * (np.sin(2 * np.pi * (1.3 + 0.2 * i) * centres) > 0)
        values[:, ARKIT52.index("browInnerUp")] = 0.2 + 0.05 * rng.standard_normal(frames)
        MotionClip(fps=25, layout="arkit52", values=values).save(folder / f"u{i}.npz")
        out.append(CorpusItem(f"u{i}", "train" if i < 6 else "val", str(wav), str(folder / f"u{i}.npz")))
    return out


CONFIG = {"hidden": 8, "layers": 1, "train": {"max_epochs": 6, "crop_frames": 20, "batch_size": 3, "patience": 50}}


def _weights(model):
    return {k: v.clone() for k, v in model.model.state_dict().items()}


def test_the_same_seed_gives_the_same_weights(items, tmp_path):
    a = train("separate", items, tmp_path / "a.pt", config=CONFIG, cache_dir=tmp_path / "cache")
    b = train("separate", items, tmp_path / "b.pt", config=CONFIG, cache_dir=tmp_path / "cache")
    for key, value in _weights(a).items():
        assert torch.equal(value, _weights(b)[key]), key
    other = train("separate", items, tmp_path / "c.pt", config={**CONFIG, "train": {**CONFIG["train"], "seed": 1}},
                  cache_dir=tmp_path / "cache")
    assert any(not torch.equal(v, _weights(other)[k]) for k, v in _weights(a).items())


def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(items, tmp_path):
    whole = train("separate", items, tmp_path / "whole.pt", config=CONFIG, cache_dir=tmp_path / "cache")

    class Interrupted(Exception):
        pass

    def stop_after_three(event):
        if event.get("epoch") == 3:
            raise Interrupted()

    path = tmp_path / "resumed.pt"
    with pytest.raises(Interrupted):
        train("separate", items, path, config=CONFIG, cache_dir=tmp_path / "cache", progress=stop_after_three)
    assert not path.exists() and path.with_name(path.name + ".resume").exists()
    seen = []
    resumed = train("separate", items, path, config=CONFIG, cache_dir=tmp_path / "cache",
                    progress=lambda e: seen.append(e.get("epoch")))
    assert [e for e in seen if e] == [4, 5, 6]  # it went on from epoch 3, not from the start
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4, 5, 6]
    for key, value in _weights(whole).items():
        assert torch.equal(value, _weights(resumed)[key]), key
    assert not path.with_name(path.name + ".resume").exists()


def test_a_resume_file_of_another_configuration_is_ignored(items, tmp_path):
    path = tmp_path / "m.pt"

    def stop(event):
        if event.get("epoch") == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train("separate", items, path, config=CONFIG, cache_dir=tmp_path / "cache", progress=stop)
    other = {**CONFIG, "hidden": 6}
    model = train("separate", items, path, config=other, cache_dir=tmp_path / "cache")
    assert [h["epoch"] for h in model.history][0] == 1 and model.config.hidden == 6


def test_early_stopping_stops_after_patience_without_improvement(items, tmp_path):
    config = {**CONFIG, "train": {**CONFIG["train"], "max_epochs": 200, "patience": 2, "lr": 0.0}}
    model = train("separate", items, tmp_path / "m.pt", config=config, cache_dir=tmp_path / "cache")
    # With a learning rate of zero nothing improves after the first epoch: 1 + patience epochs.
    assert len(model.history) == 3


def test_the_checkpoint_carries_config_features_and_normalisation(items, tmp_path):
    model = train("joint", items, tmp_path / "m.pt", config={"hidden": 8, "train": {"max_epochs": 2}},
                  cache_dir=tmp_path / "cache")
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.kind == "joint" and loaded.config.hidden == 8 and loaded.config.train.max_epochs == 2
    assert loaded.config.train.crop_frames == 100  # a nested override keeps the other defaults
    assert loaded.feature_spec.kind == "mfcc_prosody" and loaded.feature_spec.fps == 25
    assert loaded.feature_norm.dim == 27
    assert set(loaded.space["regions"]) <= {"upper", "middle", "lower"}
    assert loaded.sha256 == model.sha256


def test_bad_requests_are_refused_with_the_reason(items, tmp_path):
    with pytest.raises(ValueError, match="unknown model kind"):
        train("transformer", items, tmp_path / "m.pt", cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="unknown setting"):
        train("separate", items, tmp_path / "m.pt", config={"hiden": 3}, cache_dir=tmp_path / "cache")
    only_val = [CorpusItem(i.name, "val", i.audio_path, i.motion_path) for i in items]
    with pytest.raises(TrainingError, match="train split"):
        train("separate", only_val, tmp_path / "m.pt", cache_dir=tmp_path / "cache")
    (tmp_path / "junk.pt").write_bytes(b"nope")
    with pytest.raises(TrainingError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    assert not (tmp_path / "m.pt").exists()
