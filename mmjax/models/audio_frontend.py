"""Log-mel spectrograms in JAX, so the accelerator (not the data hosts) turns waveforms into
features inside the jitted step.

The mel filterbank matches librosa.filters.mel defaults (Slaney mel scale, Slaney area
normalization); it is a numpy constant built once per trace. librosa is only a test dependency.
"""
import einops
import jax
import jax.numpy as jnp
import numpy as np

LOG_EPS = 1e-6

# Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz):
  hz = np.asarray(hz, np.float64)
  log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
  return np.where(hz >= _MIN_LOG_HZ, log_part, hz / _F_SP)


def mel_to_hz(mel):
  mel = np.asarray(mel, np.float64)
  log_part = _MIN_LOG_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
  return np.where(mel >= _MIN_LOG_MEL, log_part, mel * _F_SP)


def mel_filterbank(sample_rate, n_fft, n_mels, fmin=0.0, fmax=None):
  """Triangular mel filters as f32[n_fft // 2 + 1, n_mels] (frequency bins, mels).

  Same values as librosa.filters.mel(...).T with its defaults (htk=False, norm='slaney').
  """
  fmax = sample_rate / 2 if fmax is None else fmax
  fft_hz = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
  # n_mels triangles need n_mels + 2 edges, evenly spaced in mels.
  edges_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
  widths_hz = np.diff(edges_hz)
  ramps = edges_hz[:, None] - fft_hz[None, :]
  rising = -ramps[:-2] / widths_hz[:-1, None]
  falling = ramps[2:] / widths_hz[1:, None]
  weights = np.maximum(0.0, np.minimum(rising, falling))
  # Slaney normalization: each triangle has unit area in Hz, so wide high bands are not louder.
  weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
  return weights.T.astype(np.float32)


def hann_window(n):
  """Periodic Hann window f32[n] (the FFT convention, as scipy's get_window('hann', n))."""
  return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def frame(wave_bt, n_fft, hop):
  """Frames without centering: f32[B, 1 + (T - n_fft) // hop, n_fft].

  Built from hop-sized chunks with reshapes and concatenation instead of a gather, which is
  slow on TPUs: frame f is chunks f .. f+k-1 joined and cut to n_fft samples.
  """
  num_samples = wave_bt.shape[1]
  if num_samples < n_fft:
    raise ValueError(f"Audio of {num_samples} samples is shorter than n_fft={n_fft}.")
  num_frames = 1 + (num_samples - n_fft) // hop
  chunks_per_frame = -(-n_fft // hop)
  num_chunks = num_frames + chunks_per_frame - 1
  # Zero padding can only land past n_fft within the last frames, where it is cut off.
  wave_bt = wave_bt[:, :num_chunks * hop]
  wave_bt = jnp.pad(wave_bt, ((0, 0), (0, num_chunks * hop - wave_bt.shape[1])))
  chunks_bch = einops.rearrange(wave_bt, "b (c h) -> b c h", h=hop)
  frames = jnp.concatenate(
      [chunks_bch[:, j:j + num_frames] for j in range(chunks_per_frame)], axis=-1)
  return frames[..., :n_fft]


def log_mel_spectrogram(wave_bt, *, sample_rate, n_fft, hop, n_mels, fmin=0.0, fmax=None):
  """log(mel power + 1e-6) as f32[B, 1 + (T - n_fft) // hop, n_mels] from f32[B, T] audio.

  Uncentered frames, periodic Hann window, power spectrum (|rfft|^2), Slaney mel filters.
  """
  frames_bfn = frame(wave_bt.astype(jnp.float32), n_fft, hop) * hann_window(n_fft)
  spectrum = jnp.fft.rfft(frames_bfn, n=n_fft, axis=-1)
  power_bfk = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
  filters_km = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
  # HIGHEST: TPUs would otherwise multiply in bfloat16, which the log of quiet bands magnifies.
  mel_bfm = jnp.matmul(power_bfk, filters_km, precision=jax.lax.Precision.HIGHEST)
  return jnp.log(mel_bfm + LOG_EPS)
