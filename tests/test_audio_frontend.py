"""The JAX log-mel front-end against librosa (the reference implementation)."""
import jax
import librosa
import numpy as np
import pytest

from mmjax.models import audio_frontend

SAMPLE_RATE = 8000


def _chirp_and_noise(num_samples=4000, seed=0):
  t = np.arange(num_samples) / SAMPLE_RATE
  chirp = 0.5 * np.sin(2 * np.pi * (200 * t + 1500 * t ** 2))
  noise = 0.05 * np.random.default_rng(seed).standard_normal(num_samples)
  return (chirp + noise).astype(np.float32)


@pytest.mark.parametrize("n_fft,n_mels,fmin,fmax", [(256, 32, 0.0, None), (200, 40, 50.0, 3500.0)])
def test_mel_filterbank_matches_librosa(n_fft, n_mels, fmin, fmax):
  ours = audio_frontend.mel_filterbank(SAMPLE_RATE, n_fft, n_mels, fmin, fmax)
  ref = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
  assert ours.shape == (n_fft // 2 + 1, n_mels)
  np.testing.assert_allclose(ours, ref.T, rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # librosa's first call compiles (numba).
@pytest.mark.parametrize("n_fft,hop", [(256, 128), (200, 80)])
def test_log_mel_matches_librosa(n_fft, hop):
  wave = _chirp_and_noise()
  fn = jax.jit(lambda w: audio_frontend.log_mel_spectrogram(
      w, sample_rate=SAMPLE_RATE, n_fft=n_fft, hop=hop, n_mels=32))
  ours = np.asarray(fn(wave[None]))[0]
  ref = librosa.feature.melspectrogram(
      y=wave.astype(np.float64), sr=SAMPLE_RATE, n_fft=n_fft, hop_length=hop, center=False,
      window="hann", power=2.0, n_mels=32)
  ref = np.log(ref + audio_frontend.LOG_EPS).T
  assert ours.shape == ref.shape == (1 + (len(wave) - n_fft) // hop, 32)
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
