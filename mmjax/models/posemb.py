"""Fixed sin-cos position tables (numpy float32, built at trace time: they are constants)."""
import numpy as np


def _sincos(positions, width, temperature):
  """f32[len(positions), width]: sin of every frequency, then cos."""
  if width % 2:
    raise ValueError(f"sin-cos positions need an even width, got {width}.")
  omega = 1.0 / temperature ** (np.arange(width // 2, dtype=np.float64) / (width // 2))
  angles = np.asarray(positions, np.float64)[:, None] * omega[None, :]
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def sincos_1d(length, width, temperature=10_000.0):
  """f32[length, width] table for a sequence."""
  return _sincos(np.arange(length), width, temperature)


def sincos_2d(height, width_tokens, width, temperature=10_000.0):
  """f32[height * width_tokens, width] table for a row-major grid: half the channels encode
  the row, half the column (MoCo v3 / MAE)."""
  if width % 4:
    raise ValueError(f"2-D sin-cos positions need a width divisible by 4, got {width}.")
  rows, cols = np.meshgrid(np.arange(height), np.arange(width_tokens), indexing="ij")
  return np.concatenate([_sincos(rows.reshape(-1), width // 2, temperature),
                         _sincos(cols.reshape(-1), width // 2, temperature)], axis=1)


def for_grid(grid, width):
  """The table for a 1-D (length,) or 2-D (rows, cols) token grid: f32[prod(grid), width]."""
  if len(grid) == 1:
    return sincos_1d(grid[0], width)
  if len(grid) == 2:
    return sincos_2d(grid[0], grid[1], width)
  raise ValueError(f"Token grids are 1-D or 2-D, got {grid}.")
