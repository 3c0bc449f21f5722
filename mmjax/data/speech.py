"""Offline speech synthesis with the espeak-ng command-line tool.

espeak-ng is a small formant synthesizer packaged by every Linux distribution and Homebrew. It
is only needed while a dataset is being built; training reads the stored waveforms.
"""
import io
import math
import shutil
import subprocess
import wave

import numpy as np
from scipy import signal

from mmjax.errors import UserError

ESPEAK = "espeak-ng"

# Frames quieter than this (relative to the loudest frame) count as silence when trimming.
_SILENCE_DB = -40.0
_FRAME_SECONDS = 0.01


def require_espeak():
  """Returns the path of espeak-ng, or raises UserError saying how to install it."""
  path = shutil.which(ESPEAK)
  if path is None:
    raise UserError(
        f"{ESPEAK} is not installed (not found on PATH), but building the spoken-digits "
        "dataset needs it to synthesize speech. Install it with "
        f"`sudo apt-get install {ESPEAK}` (Debian/Ubuntu) or `brew install {ESPEAK}` (macOS), "
        "or run ./scripts/demo.sh, which installs it.")
  return path


def synthesize(text, *, voice, speed, pitch, sample_rate):
  """Speaks `text` with espeak-ng.

  Args:
    text: what to say.
    voice: espeak-ng voice, a language with an optional variant, e.g. "en-us+f2".
    speed: words per minute (espeak's -s; 80..450).
    pitch: 0..99 (espeak's -p).
    sample_rate: output rate in Hz; espeak's native 22050 Hz is resampled to it.

  Returns:
    int16[T] mono waveform at `sample_rate`, leading and trailing silence removed.
  """
  cmd = [ESPEAK, "-v", voice, "-s", str(int(speed)), "-p", str(int(pitch)), "--stdout", text]
  try:
    proc = subprocess.run(cmd, capture_output=True, check=False)
  except FileNotFoundError:
    require_espeak()  # Raises the install instructions.
    raise
  # espeak-ng exits 0 on some failures and only complains on stderr; either way, fail loudly.
  if proc.returncode != 0 or proc.stderr.strip() or not proc.stdout:
    raise UserError(
        f"{ESPEAK} failed to speak {text!r} with voice {voice!r} (speed {speed}, pitch "
        f"{pitch}): {proc.stderr.decode(errors='replace').strip() or 'no audio produced'} "
        f"List the installed voices with `{ESPEAK} --voices=en`.")
  rate, x = _read_wav(proc.stdout)
  if rate != sample_rate:
    g = math.gcd(rate, sample_rate)
    x = signal.resample_poly(x, sample_rate // g, rate // g)
  x = _trim_silence(x, frame=max(1, round(_FRAME_SECONDS * sample_rate)))
  return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def _read_wav(data):
  """Returns (rate, float64[T]) from the bytes of a 16-bit mono WAV file."""
  with wave.open(io.BytesIO(data), "rb") as w:
    if w.getsampwidth() != 2 or w.getnchannels() != 1:
      raise ValueError(f"Expected 16-bit mono WAV from {ESPEAK}, got {w.getparams()}.")
    rate = w.getframerate()
    # On a pipe espeak cannot seek back to write the length, so the header claims ~2**31
    # frames; reading "everything" stops at the real end of the data.
    frames = w.readframes(w.getnframes())
  return rate, np.frombuffer(frames, dtype="<i2").astype(np.float64)


def _trim_silence(x, frame):
  """Drops leading/trailing frames whose RMS is below _SILENCE_DB relative to the peak frame."""
  n = len(x) // frame
  if n == 0:
    return x
  rms = np.sqrt(np.mean(x[:n * frame].reshape(n, frame) ** 2, axis=1))
  loud = np.flatnonzero(rms > rms.max() * 10 ** (_SILENCE_DB / 20))
  if loud.size == 0:
    return x[:0]
  return x[loud[0] * frame:(loud[-1] + 1) * frame]
