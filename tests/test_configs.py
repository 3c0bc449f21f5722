"""Every config file, with each of its variants, loads and passes the config checks."""
import importlib
import pathlib

import pytest

from mmjax.train import validate

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
CASES = [(path.stem, arg)
         for path in sorted(CONFIG_DIR.glob("*.py")) if path.stem not in ("__init__", "common")
         for arg in importlib.import_module(f"configs.{path.stem}").VARIANTS]

# Fields every training config has (ARCHITECTURE.md): users and scripts override them by name.
TOP_LEVEL = ("seed", "total_steps", "batch_size", "log_every", "eval_every", "checkpoint_every",
             "keep_checkpoints", "mesh", "init_from")


@pytest.mark.parametrize("name, arg", CASES)
def test_config_variant_is_valid(name, arg):
  config = importlib.import_module(f"configs.{name}").get_config(arg)
  for key in TOP_LEVEL + ("data.name", "data.dir"):
    node = config
    for part in key.split("."):
      assert part in node, f"configs/{name}.py:{arg} lacks {key}"
      node = node[part]
  validate.check_config(config)


def test_every_built_in_caption_fits_the_demo_text_length(runlocal_config):
  """configs/pretrain_digits.py sets data.text_len to the longest caption the built-in dataset
  can hold ([CLS] and [SEP] included): nothing is cut off, no position is always padding."""
  from mmjax.data import digits, loader, text_tokenizer  # pylint: disable=g-import-not-at-top
  info = loader.prepare(runlocal_config.data)
  tokenizer = text_tokenizer.WordPieceTokenizer(info.vocab_file, 64)
  captions = [digits.caption(t, label) for t in digits.CAPTION_TEMPLATES for label in range(10)]
  _, mask = tokenizer.encode(captions)
  assert mask.sum(1).max() == runlocal_config.data.text_len
