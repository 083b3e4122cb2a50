"""Writing test audio: float samples in -1..1 ([n] mono or [n, channels]) as 16-bit PCM WAV."""
import wave

import numpy as np

SAMPLE_RATE = 16000


def write_wav(path, samples, sample_rate=SAMPLE_RATE):
    samples = np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0)
    frames = samples.reshape(-1, 1 if samples.ndim == 1 else samples.shape[1])
    with wave.open(str(path), "wb") as out:
        out.setnchannels(frames.shape[1])
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(np.round(frames * 32767).astype("<i2").tobytes())
    return path
