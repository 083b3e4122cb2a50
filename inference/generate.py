"""Generation: a trained checkpoint plus speech gives a motion clip of the speech's length.

`generate(model, audio)` works for any length and is deterministic for a given seed (Glow samples with the
seed and temperature; the BLSTMs are deterministic anyway). `generate_many` batches several utterances of
different lengths through the network at once (padded, with their lengths, so padding never changes a
result). The clip's metadata records the model, its checkpoint's hash, the seed and the temperature.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from . import audio as audio_io
from . import features as feats
from .motion import MotionClip, frames_for_duration
from .training import LoadedModel, load_checkpoint


def _loaded(model: LoadedModel | str | os.PathLike) -> LoadedModel:
    return model if isinstance(model, LoadedModel) else load_checkpoint(model)


def _features(model: LoadedModel, audio: str | os.PathLike | np.ndarray, n_frames: int | None,
              cache_dir: str | os.PathLike | None) -> np.ndarray:
    if model.feature_spec is None:
        raise ValueError(f"a {model.kind} model does not generate from speech")
    if isinstance(audio, np.ndarray):
        samples = audio.astype(np.float32)
        n = n_frames or frames_for_duration(len(samples) / audio_io.SAMPLE_RATE, model.fps)
        x = feats.extract(samples, model.feature_spec, n_frames=n)
    elif cache_dir is not None:
        samples = None
        if n_frames is None:
            samples = audio_io.decode(audio)
            n_frames = frames_for_duration(len(samples) / audio_io.SAMPLE_RATE, model.fps)
        x = feats.extract_cached(audio, model.feature_spec, cache_dir=cache_dir, n_frames=n_frames)
    else:
        samples = audio_io.decode(audio)
        n = n_frames or frames_for_duration(len(samples) / audio_io.SAMPLE_RATE, model.fps)
        x = feats.extract(samples, model.feature_spec, n_frames=n)
    return model.feature_norm.apply(x).astype(np.float32)


def generate(model: LoadedModel | str | os.PathLike, audio: str | os.PathLike | np.ndarray, *, seed: int = 0,
             temperature: float | None = None, n_frames: int | None = None,
             cache_dir: str | os.PathLike | None = None) -> MotionClip:
    """Motion for one utterance (a path any ffmpeg format, or 16 kHz mono samples)."""
    return generate_many(model, [audio], seed=seed, temperature=temperature,
                         n_frames=[n_frames] if n_frames else None, cache_dir=cache_dir)[0]


@torch.no_grad()
def generate_many(model: LoadedModel | str | os.PathLike, audios: list, *, seed: int = 0,
                  temperature: float | None = None, n_frames: list[int] | None = None, batch_size: int = 16,
                  cache_dir: str | os.PathLike | None = None) -> list[MotionClip]:
    model = _loaded(model)
    model.model.eval()  # dropout off: generation is deterministic wherever the model is
    # Record the temperature a sampling model really used (its config's default when none is given).
    used_temperature = temperature if temperature is not None else getattr(model.config, "temperature", None)
    xs = [_features(model, a, (n_frames or [None] * len(audios))[i], cache_dir) for i, a in enumerate(audios)]
    clips: list[MotionClip | None] = [None] * len(xs)
    # Longest first, so each batch pads little.
    order = sorted(range(len(xs)), key=lambda i: -len(xs[i]))
    for start in range(0, len(order), batch_size):
        chosen = order[start:start + batch_size]
        T = len(xs[chosen[0]])
        batch = np.stack([np.pad(xs[i], [(0, T - len(xs[i]))] + [(0, 0)] * (xs[i].ndim - 1), mode="edge")
                          for i in chosen])
        lengths = torch.tensor([len(xs[i]) for i in chosen])
        # One seed per utterance (not per batch), so batching never changes a sampled result.
        pred = model.recipe.predict(model.model, model.config, torch.from_numpy(batch), lengths,
                                    seeds=[seed] * len(chosen), temperature=temperature)
        pred = pred.numpy()
        for row, i in enumerate(chosen):
            values = model.target_norm.invert(pred[row, :len(xs[i])])
            clip = model.recipe.to_clip(model.config, model.space, values.astype(np.float32), model.fps)
            source = audios[i] if not isinstance(audios[i], np.ndarray) else "<samples>"
            clips[i] = clip.with_values(clip.values, source=f"model:{model.kind}", model=model.kind,
                                        checkpoint=Path(model.path).name, checkpoint_sha256=model.sha256,
                                        seed=seed, temperature=used_temperature, audio=str(source))
    return clips
