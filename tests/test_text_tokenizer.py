"""WordPiece tokenization: agrees with TensorFlow Text's BERT tokenizer on real English text."""
import codecs
import contextlib
import inspect
import io
import os
import sysconfig

import numpy as np
import pytest

from mmjax.data import text_tokenizer
from mmjax.errors import UserError


def zen_of_python():
  with contextlib.redirect_stdout(io.StringIO()):  # Importing `this` prints it.
    import this  # pylint: disable=g-import-not-at-top
  return codecs.decode(this.s, "rot13")


def docstrings(*module_names):
  docs = (inspect.getdoc(__import__(name)) for name in module_names)
  return [d for d in docs if d]


def license_paragraphs():
  """Paragraphs of the Python license, which ships with the interpreter (when it does)."""
  path = os.path.join(sysconfig.get_path("stdlib"), "LICENSE.txt")
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [p for p in f.read().split("\n\n") if p.strip()][:60]


def corpus():
  return [zen_of_python()] + docstrings("json", "argparse", "collections", "textwrap",
                                        "functools")


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("vocab") / "vocab.txt")
  # Small on purpose, so that words split into several pieces.
  text_tokenizer.learn_vocab(corpus(), 300, path)
  return path


def test_learned_vocab_is_bert_style(vocab):
  with open(vocab, encoding="utf-8") as f:
    tokens = f.read().splitlines()
  assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  assert len(tokens) == 300 and len(set(tokens)) == 300
  assert any(t.startswith("##") for t in tokens)
  tok = text_tokenizer.WordPieceTokenizer(vocab, 8)
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
  assert tok.vocab_size == 300


def test_learning_is_deterministic(vocab, tmp_path):
  with open(vocab, encoding="utf-8") as f:
    expected = f.read()
  for i in range(3):
    path = tmp_path / f"vocab{i}.txt"
    text_tokenizer.learn_vocab(corpus(), 300, str(path))
    assert path.read_text(encoding="utf-8") == expected


def test_ids_match_tensorflow_text(vocab):
  tf = pytest.importorskip("tensorflow")
  tf_text = pytest.importorskip("tensorflow_text")
  # Text the vocab was not learned from, with characters it has never seen.
  texts = license_paragraphs() + docstrings("itertools", "re", "string", "pathlib", "heapq")
  texts.append("Naïve café owners — and ÜBER-users — paid £3½ for “smart” quotes.")
  ours = text_tokenizer.WordPieceTokenizer(vocab, 4096)
  ids, mask = ours.encode(texts)
  assert mask.sum(1).max() < 4096  # Nothing truncated.
  reference = tf_text.BertTokenizer(vocab, lower_case=True, token_out_type=tf.int32)
  pieces = reference.tokenize(texts)  # int32[B, (words), (pieces)]
  # The comparison must be able to fail: words do split, and unknown words do occur.
  assert (pieces.row_lengths(axis=2).flat_values.numpy() > 1).sum() > 100
  assert (pieces.flat_values.numpy() == ours.unk_id).sum() > 0
  expected = pieces.merge_dims(1, 2).to_list()
  for i, text in enumerate(texts):
    row = ids[i][mask[i]]
    assert row[0] == ours.cls_id and row[-1] == ours.sep_id
    assert row[1:-1].tolist() == expected[i], text[:80]


def test_padding_truncation_and_mask(vocab):
  texts = ["", "is", "Beautiful is better than ugly, explicit is better."]
  tok = text_tokenizer.WordPieceTokenizer(vocab, 6)
  ids, mask = tok.encode(texts)
  assert ids.dtype == np.int32 and mask.dtype == bool and ids.shape == mask.shape == (3, 6)
  full, full_mask = text_tokenizer.WordPieceTokenizer(vocab, 64).encode(texts)
  assert full_mask.sum(1).tolist()[:2] == [2, 3] and full_mask[2].sum() > 6
  np.testing.assert_array_equal(mask.sum(1), [2, 3, 6])
  np.testing.assert_array_equal(ids[0], [tok.cls_id, tok.sep_id] + [tok.pad_id] * 4)
  np.testing.assert_array_equal(ids[1], full[1, :6])  # Padded with [PAD]=0.
  # A truncated row keeps the text's first pieces and still ends in [SEP].
  np.testing.assert_array_equal(ids[2, :5], full[2, :5])
  assert ids[2, 5] == tok.sep_id
  assert (ids[~mask] == tok.pad_id).all() and (ids[mask] != tok.pad_id).all()


def test_missing_vocab_file_names_the_path(tmp_path):
  path = str(tmp_path / "nope.txt")
  with pytest.raises(UserError, match="nope.txt"):
    text_tokenizer.WordPieceTokenizer(path, 16)


def test_vocab_without_specials_is_refused(tmp_path):
  path = tmp_path / "vocab.txt"
  path.write_text("hello\nworld\n")
  with pytest.raises(UserError, match=r"\[CLS\]"):
    text_tokenizer.WordPieceTokenizer(str(path), 16)


def test_a_tokenizer_json_gives_the_rows_transformers_gives(tmp_path):
  """data.vocab_file may be a checkpoint's tokenizer.json (CLIP's is a byte-level BPE with
  start- and end-of-text tokens): JsonTokenizer's ids and mask equal transformers' fast
  tokenizer's on the same file (padding to max_length, truncation keeping the end token), and
  every row ends in its end-of-text token, which mmjax pools."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, models, pre_tokenizers, processors, trainers  # pylint: disable=g-import-not-at-top
  transformers = pytest.importorskip("transformers", reason="./scripts/setup_env.sh --interop")
  texts = [p for p in zen_of_python().split("\n") if p]
  tok = tokenizers.Tokenizer(models.BPE(unk_token="<|endoftext|>"))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(texts, trainers.BpeTrainer(
      vocab_size=300, special_tokens=["<|startoftext|>", "<|endoftext|>"],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
  sot, eot = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
  tok.post_processor = processors.TemplateProcessing(
      single="<|startoftext|> $A <|endoftext|>",
      special_tokens=[("<|startoftext|>", sot), ("<|endoftext|>", eot)])
  path = str(tmp_path / "tokenizer.json")
  tok.save(path)
  ours = text_tokenizer.load(path, 16)
  assert isinstance(ours, text_tokenizer.JsonTokenizer)
  assert ours.vocab_size == tok.get_vocab_size()
  ids, mask = ours.encode(texts)
  reference = transformers.PreTrainedTokenizerFast(tokenizer_file=path, pad_token="<|endoftext|>")
  want = reference(texts, padding="max_length", truncation=True, max_length=16,
                   return_tensors="np")
  np.testing.assert_array_equal(mask, want["attention_mask"].astype(bool))
  np.testing.assert_array_equal(ids[mask], want["input_ids"][mask])
  last = mask.sum(1) - 1
  assert (ids[:, 0] == sot).all() and (ids[np.arange(len(ids)), last] == eot).all()
  assert (mask.sum(1) == 16).any() and (mask.sum(1) < 16).any()  # Truncated and padded rows.
  with pytest.raises(UserError, match="tokenizer.json"):
    text_tokenizer.load(str(tmp_path / "missing.json"), 16)
