"""Preprocessing ops from op strings: parsing, build-time errors, and each op on tiny inputs."""
import io
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from mmjax.data import ops
from mmjax.data.ops import BadExample
from mmjax.data.text_tokenizer import SPECIAL_TOKENS, WordPieceTokenizer
from mmjax.errors import UserError


def run(spec, data, seed=None, context=None):
  rng = None if seed is None else np.random.default_rng(seed)
  return ops.build(spec, context)(data, rng)


def grid(h, w, c=1):
  """uint8[h, w, c] with distinct values."""
  return np.arange(h * w * c, dtype=np.uint8).reshape(h, w, c)


def sine(bin_index, n, dtype=np.float32):
  return np.sin(2 * np.pi * bin_index * np.arange(n) / n).astype(dtype)


# Parsing and building.


def test_parse_round_trips():
  spec = "decode|resize(32)|flip_lr|value_range(-1, 1)|tokenize(16, key='caption')"
  assert ops.parse(spec) == [
      ("decode", (), {}), ("resize", (32,), {}), ("flip_lr", (), {}),
      ("value_range", (-1, 1), {}), ("tokenize", (16,), {"key": "caption"})]
  assert ops.parse(["decode", "random_resized_crop((8, 4), scale=(0.5, 1.0))"]) == [
      ("decode", (), {}), ("random_resized_crop", ((8, 4),), {"scale": (0.5, 1.0)})]
  assert ops.parse("") == []


@pytest.mark.parametrize("spec, message", [
    ("decode|resise(32)", "Did you mean 'resize'?"),
    ("decode|resize(32", "not valid op syntax"),
    ("resize(size)", "literals"),
    ("resize(3 * 4)", "literals"),
    ("decode||flip_lr", "op 2"),
])
def test_parse_errors(spec, message):
  with pytest.raises(UserError, match="data.pp") as e:
    ops.parse(spec)
  assert message in str(e.value)


def test_modality_ops_load_on_first_lookup():
  """`ops` does not import ops_image / ops_text / ops_audio (they import it); the first parse
  does, so every op is known, and listed, after only `from mmjax.data import ops`."""
  code = ("import sys\n"
          "from mmjax.data import ops\n"
          "assert not any(m.startswith('mmjax.data.ops_') for m in sys.modules)\n"
          "assert ops.parse('decode|tokenize(16)|to_float')[1] == ('tokenize', (16,), {})\n"
          "try:\n"
          "  ops.parse('random_gian(0, 1)')\n"
          "except Exception as e:\n"
          "  print(e)\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=pathlib.Path(__file__).parents[1])
  assert "Did you mean 'random_gain'?" in out.stdout
  for name in ("keep", "resize", "check_text", "check_audio"):
    assert f" {name}," in out.stdout


@pytest.mark.parametrize("spec, message", [
    ("resize(-3)", "size must be an integer >= 1"),
    ("resize((8, 0))", "width must be an integer >= 1"),
    ("resize('big')", "size must be"),
    ("resize(32, method='cubic')", "method must be one of"),
    ("random_resized_crop(32, scale=(0.9, 0.1))", "scale must have"),
    ("resize()", "missing a required argument"),
    ("flip_lr(nope=1)", "unexpected keyword"),
    ("cast('int33')", "dtype must be"),
    ("tokenize(16)", "tokenizer_factory"),
])
def test_build_errors_name_where_and_op(spec, message):
  name = spec.split("(")[0]
  with pytest.raises(UserError, match=f"config.train_pp: op 2 .{name}") as e:
    ops.build(f"decode|{spec}", where="config.train_pp")
  assert message in str(e.value)
  assert f"Usage: {name}(" in str(e.value)


def test_random_ops_need_rng_and_are_reproducible():
  pp = ops.build("random_resized_crop(4)|flip_lr|time_mask(2, 3, key='audio')")
  data = {"image": grid(10, 10, 3), "audio": np.ones(50, np.float32)}
  with pytest.raises(ValueError, match="need an rng"):
    pp(data)
  def out(seed):
    return pp(data, np.random.default_rng(seed))
  np.testing.assert_array_equal(out(0)["image"], out(0)["image"])
  np.testing.assert_array_equal(out(0)["audio"], out(0)["audio"])
  assert any(not np.array_equal(out(0)["image"], out(s)["image"]) for s in range(1, 4))


def test_missing_key_is_a_user_error():
  with pytest.raises(UserError, match="reads 'image'.*it has \\['img'\\]"):
    run("resize(4)", {"img": grid(2, 2)})


# Images.


def test_decode():
  from PIL import Image
  image = grid(3, 5, 3)
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG")
  np.testing.assert_array_equal(run("decode", {"image": buf.getvalue()})["image"], image)
  grey = run("decode(key='x', channels=1)", {"x": buf.getvalue()})["x"]
  assert grey.shape == (3, 5, 1) and grey.dtype == np.uint8
  # Arrays (already decoded) pass through, with the channel count checked.
  assert run("decode(channels=1)", {"image": image[..., 0]})["image"].shape == (3, 5, 1)
  with pytest.raises(BadExample, match=r"'image' is uint8\[3, 5, 1\], expected"):
    run("decode", {"image": image[..., 0]})
  with pytest.raises(BadExample, match="'image' bytes do not decode"):
    run("decode", {"image": b"not an image"})


def test_resize_nearest_and_bilinear():
  image = grid(2, 2, 2)
  out = run("resize(4, method='nearest')", {"image": image})["image"]
  np.testing.assert_array_equal(out, image.repeat(2, axis=0).repeat(2, axis=1))
  out = run("resize((1, 3))", {"image": np.full((2, 2, 3), 7, np.uint8)})["image"]
  np.testing.assert_array_equal(out, np.full((1, 3, 3), 7, np.uint8))


def test_central_crop():
  image = grid(4, 5)
  np.testing.assert_array_equal(run("central_crop(2)", {"image": image})["image"],
                                image[1:3, 1:3])
  with pytest.raises(BadExample, match="smaller"):
    run("central_crop(6)", {"image": image})


def test_random_resized_crop():
  image = grid(12, 12, 3)
  out = run("random_resized_crop((4, 6))", {"image": image}, seed=0)["image"]
  assert out.shape == (4, 6, 3) and out.dtype == np.uint8
  whole = run("random_resized_crop(5, scale=(1, 1), ratio=(1, 1))", {"image": image}, seed=0)
  np.testing.assert_array_equal(whole["image"], run("resize(5)", {"image": image})["image"])
  # A 12x6 image has no 1:1 box of its whole area: the fallback is the central 6x6 square.
  tall = grid(12, 6)
  out = run("random_resized_crop(6, scale=(1, 1), ratio=(1, 1))", {"image": tall}, seed=0)
  np.testing.assert_array_equal(out["image"], tall[3:9])


def test_flip_lr():
  image = grid(2, 3)
  np.testing.assert_array_equal(run("flip_lr(p=1)", {"image": image}, seed=0)["image"],
                                image[:, ::-1])
  np.testing.assert_array_equal(run("flip_lr(p=0)", {"image": image}, seed=0)["image"], image)


def test_value_range_and_normalize():
  image = np.array([[[0, 255, 51]]], np.uint8)
  out = run("value_range", {"image": image})["image"]
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, [[[-1, 1, -0.6]]], rtol=1e-6)
  np.testing.assert_allclose(run("value_range(0, 10)", {"image": image})["image"], [[[0, 10, 2]]],
                             rtol=1e-6)
  out = run("normalize((0.5, 0, 0.2), (0.5, 1, 0.1))", {"image": image})["image"]
  np.testing.assert_allclose(out, [[[-1, 1, 0]]], atol=1e-6)
  with pytest.raises(ValueError, match="uint8"):
    run("value_range|value_range", {"image": image})


# Text.


def test_tokenize(tmp_path):
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join(list(SPECIAL_TOKENS) + ["a", "cat", "sat"]) + "\n")
  context = {"tokenizer_factory": lambda max_len: WordPieceTokenizer(vocab, max_len)}
  out = run("tokenize(6, key='text')", {"text": "A cat sat".encode()}, context=context)
  np.testing.assert_array_equal(out["text_ids"], [2, 5, 6, 7, 3, 0])
  np.testing.assert_array_equal(out["text_mask"], [1, 1, 1, 1, 1, 0])
  assert out["text_ids"].dtype == np.int32 and out["text_mask"].dtype == bool
  assert "text" not in out


def test_pad_or_truncate():
  ids = np.array([5, 6, 7], np.int32)
  np.testing.assert_array_equal(run("pad_or_truncate(5, pad_value=-1)", {"text_ids": ids})[
      "text_ids"], [5, 6, 7, -1, -1])
  out = run("pad_or_truncate(2, key='x')", {"x": ids})["x"]
  np.testing.assert_array_equal(out, [5, 6])
  assert out.dtype == np.int32


def test_choose():
  captions = ["a cat", "a dog", "a bird"]
  chosen = {run("choose", {"captions": captions}, seed=s)["caption"] for s in range(20)}
  assert chosen == set(captions)
  with pytest.raises(BadExample, match="empty"):
    run("choose", {"captions": []}, seed=0)


# Audio.


def test_to_float():
  out = run("to_float", {"audio": np.array([-32768, 0, 16384], np.int16)})["audio"]
  np.testing.assert_array_equal(out, np.array([-1, 0, 0.5], np.float32))
  assert run("to_float", {"audio": np.array([0.25])})["audio"].dtype == np.float32


def test_resample():
  audio = sine(100, 800)  # 1000 Hz at 8000 Hz: bin 100 of 800 samples.
  out = run("resample(16000)", {"audio": audio, "sample_rate": 8000})
  assert len(out["audio"]) == 1600 and out["sample_rate"] == 16000
  assert out["audio"].dtype == np.float32
  assert np.argmax(np.abs(np.fft.rfft(out["audio"]))) == 100  # Still 1000 Hz at 16000 Hz.
  out = run("resample(16000)", {"audio": audio}, context={"sample_rate": 8000})
  assert len(out["audio"]) == 1600 and out["sample_rate"] == 16000
  with pytest.raises(UserError, match="sample_rate"):
    run("resample(16000)", {"audio": audio})


def test_crop_or_pad():
  audio = np.arange(1, 6, dtype=np.float32)
  out = run("crop_or_pad(7)", {"audio": audio})
  np.testing.assert_array_equal(out["audio"], [1, 2, 3, 4, 5, 0, 0])
  np.testing.assert_array_equal(out["audio_mask"], [1, 1, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(run("crop_or_pad(3)", {"audio": audio})["audio"], [1, 2, 3])
  out = run("random_crop_or_pad(3, mask_key='m')", {"audio": audio}, seed=0)
  start = int(out["audio"][0]) - 1
  np.testing.assert_array_equal(out["audio"], audio[start:start + 3])
  assert out["m"].all()


def zero_runs(x):
  """[(start, length)] of the runs of zeros in 1-D `x`."""
  edges = np.diff(np.concatenate([[0], (x == 0).astype(int), [0]]))
  starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
  return list(zip(starts, ends - starts))


def test_time_mask():
  audio = np.arange(1, 101, dtype=np.float32)
  for seed in range(20):
    out = run("time_mask(1, 10)", {"audio": audio}, seed=seed)["audio"]
    runs = zero_runs(out)
    assert len(runs) <= 1 and all(length <= 10 for _, length in runs)
    np.testing.assert_array_equal(out[out != 0], audio[out != 0])  # Nothing else changed.
    out = run("time_mask(3, 5)", {"audio": audio}, seed=seed)["audio"]
    assert len(zero_runs(out)) <= 3 and (out == 0).sum() <= 15
    np.testing.assert_array_equal(out[out != 0], audio[out != 0])
  # A spectrogram [T, F] loses whole frames.
  spec = np.ones((20, 4), np.float32)
  out = run("time_mask(2, 5, key='spec')", {"spec": spec}, seed=1)["spec"]
  assert set(out.min(1)) <= {0, 1} and (out.min(1) == out.max(1)).all()
  np.testing.assert_array_equal(audio, np.arange(1, 101))  # The input is not modified.


def test_freq_mask():
  audio = sine(5, 64)  # All energy in rfft bin 5 of 33.
  removed = 0
  for seed in range(30):
    out = run("freq_mask(1, 33)", {"audio": audio}, seed=seed)["audio"]
    assert out.shape == audio.shape and out.dtype == np.float32
    if np.abs(out).max() < 1e-5:  # The band covered bin 5 ...
      removed += 1
    else:  # ... or missed it and left the sine as it was.
      np.testing.assert_allclose(out, audio, atol=1e-5)
  assert 0 < removed < 30
  spec = np.ones((3, 16), np.float32)
  out = run("freq_mask(2, 4, key='spec')", {"spec": spec}, seed=0)["spec"]
  assert set(out.min(0)) <= {0, 1} and (out.min(0) == out.max(0)).all()
  assert (out[0] == 0).sum() <= 8


# General.


def test_keep_drop_rename_cast():
  data = {"a": 1, "b": 2, "text": "hi"}
  assert run("keep('b', 'a')", data) == {"b": 2, "a": 1}
  assert run("drop('a', 'text')", data) == {"b": 2}
  assert run("rename(caption='text', c='a')", data) == {"b": 2, "caption": "hi", "c": 1}
  out = run("cast('int32', key='a')", data)["a"]
  assert out.dtype == np.int32 and out == 1
  with pytest.raises(UserError, match="reads 'c'"):
    run("drop('c')", data)
  with pytest.raises(UserError, match="op 1 'keep'"):
    ops.build("keep")
