"""Text tokenization with HF `tokenizers`: BERT-style WordPiece (learned here or loaded), or a
checkpoint's own `tokenizer.json` (CLIP's BPE, SentencePiece models, ...) as it is.

Vocabularies are plain BERT `vocab.txt` files (one token per line, the line number is the id),
so a vocab learned here also works with BERT tooling and vice versa. `load` picks by the file:
a `.json` is a whole tokenizer (JsonTokenizer), anything else a WordPiece vocab.
"""
import os

import numpy as np
import tokenizers
from tokenizers import models, normalizers, pre_tokenizers, processors, trainers

from mmjax import paths
from mmjax.errors import UserError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
# Order gives the ids of a learned vocab: [PAD]=0 so zero-padding and padding agree.
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
# The cut-off of the reference BERT tokenizer: longer words become one [UNK].
MAX_CHARS_PER_WORD = 100


def _bert_pipeline(model):
  """A tokenizer with BERT's uncased text handling around `model`."""
  tok = tokenizers.Tokenizer(model)
  # Lowercase, strip accents, drop control characters, space out CJK characters.
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  # Split on whitespace and around every punctuation character.
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  return tok


def learn_vocab(texts, vocab_size, path):
  """Learns an uncased WordPiece vocab of at most `vocab_size` tokens and writes it to `path`.

  The first ids are [PAD]=0, [UNK], [CLS], [SEP], [MASK]. A small corpus can give fewer than
  `vocab_size` tokens (the trainer stops when nothing is left to merge). The same texts always
  give the same vocab.

  Returns:
    The number of tokens written.
  """
  if vocab_size < len(SPECIAL_TOKENS) + 1:
    raise UserError(f"data.vocab_size must be more than {len(SPECIAL_TOKENS)}, got {vocab_size}.")
  texts = list(texts)
  tok = _bert_pipeline(models.WordPiece(unk_token=UNK,
                                        max_input_chars_per_word=MAX_CHARS_PER_WORD))
  # The trainer numbers "##x" tokens in hash-map order, and that order breaks ties between
  # equally frequent merges, so the same texts can give different vocabs from run to run
  # (huggingface/tokenizers#1794). Declaring them up front, sorted, fixes their ids.
  continuations = set()
  for text in texts:
    for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text)):
      continuations.update(word[1:])
  trainer = trainers.WordPieceTrainer(
      vocab_size=vocab_size, show_progress=False,
      special_tokens=list(SPECIAL_TOKENS) + [f"##{c}" for c in sorted(continuations)])
  tok.train_from_iterator(texts, trainer)
  vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
  assert [t for t, _ in vocab[:len(SPECIAL_TOKENS)]] == list(SPECIAL_TOKENS), vocab[:5]
  assert [i for _, i in vocab] == list(range(len(vocab))), "vocab ids are not contiguous"
  with paths.atomic_open(path) as f:  # A reader never sees half a file.
    f.writelines(f"{token}\n" for token, _ in vocab)
  return len(vocab)


def _rows(tok, texts, max_len):
  """(ids int32[B, max_len], mask bool[B, max_len]) of `texts` through `tok` (padded and
  truncated to max_len)."""
  texts = list(texts)
  # One text (the per-example loader op) is ~10x faster without encode_batch's thread pool.
  encodings = [tok.encode(texts[0])] if len(texts) == 1 else tok.encode_batch(texts)
  ids = np.array([e.ids for e in encodings], dtype=np.int32).reshape(-1, max_len)
  mask = np.array([e.attention_mask for e in encodings], dtype=bool).reshape(-1, max_len)
  return ids, mask


class WordPieceTokenizer:
  """Turns strings into fixed-length [CLS] wordpieces [SEP] [PAD]... id rows."""

  def __init__(self, vocab_path, max_len):
    if max_len < 2:
      raise UserError(f"The text length must leave room for [CLS] and [SEP], got {max_len}.")
    try:
      vocab = models.WordPiece.read_file(os.fspath(vocab_path))
    except Exception as e:  # tokenizers raises a bare Exception for unreadable files.
      raise UserError(f"Cannot read the WordPiece vocab file {vocab_path!r} ({e}). Point "
                      "data.vocab_file at a BERT-style vocab.txt, or set it to '' to learn "
                      "one from the training captions.") from e
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
      raise UserError(f"The vocab file {vocab_path!r} lacks the special tokens {missing}; a "
                      f"BERT-style vocab.txt has all of {list(SPECIAL_TOKENS)}.")
    self.vocab_path = os.fspath(vocab_path)
    self.max_len = max_len
    self._vocab_size = len(vocab)
    self._ids = {t: vocab[t] for t in SPECIAL_TOKENS}
    tok = _bert_pipeline(models.WordPiece(vocab, unk_token=UNK,
                                          max_input_chars_per_word=MAX_CHARS_PER_WORD))
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", special_tokens=[(CLS, self.cls_id), (SEP, self.sep_id)])
    # Truncation counts the [CLS]/[SEP] added by the post-processor, so [SEP] always ends a row.
    tok.enable_truncation(max_length=max_len)
    tok.enable_padding(length=max_len, pad_id=self.pad_id, pad_token=PAD)
    self._tok = tok

  def encode(self, texts):
    """Tokenizes a list of B strings.

    Returns:
      ids: int32[B, max_len], [CLS] wordpieces [SEP] then [PAD]s.
      mask: bool[B, max_len], True on real tokens (including [CLS] and [SEP]).
    """
    return _rows(self._tok, texts, self.max_len)

  @property
  def vocab_size(self):
    return self._vocab_size

  @property
  def pad_id(self):
    return self._ids[PAD]

  @property
  def unk_id(self):
    return self._ids[UNK]

  @property
  def cls_id(self):
    return self._ids[CLS]

  @property
  def sep_id(self):
    return self._ids[SEP]

  @property
  def mask_id(self):
    return self._ids[MASK]


class JsonTokenizer:
  """A `tokenizer.json` (what transformers' fast tokenizers save: CLIP's BPE with its start- and
  end-of-text tokens, a SentencePiece model, a BERT) as fixed-length id rows: its own
  normalization, pre-tokenization and special tokens, truncated to max_len (the special tokens
  kept) and padded after (mask False). A CLIP row is <|startoftext|> tokens <|endoftext|>, so
  mmjax's end-of-text pooling (the last valid token) and masked modeling (first and last
  valid tokens never hidden) read it as they read [CLS] ... [SEP]."""

  def __init__(self, path, max_len):
    try:
      tok = tokenizers.Tokenizer.from_file(os.fspath(path))
    except Exception as e:  # tokenizers raises a bare Exception for unreadable files.
      raise UserError(f"Cannot read the tokenizer file {path!r} ({e}): give a transformers "
                      "tokenizer.json.") from e
    self.vocab_path, self.max_len = os.fspath(path), max_len
    self._vocab_size = tok.get_vocab_size(with_added_tokens=True)
    padding = tok.padding or {}
    tok.enable_truncation(max_length=max_len)
    tok.enable_padding(length=max_len, pad_id=padding.get("pad_id", 0),
                       pad_token=padding.get("pad_token", "[PAD]"))
    self._tok = tok

  def encode(self, texts):
    """ids int32[B, max_len], mask bool[B, max_len] (True on the tokenizer's tokens)."""
    return _rows(self._tok, texts, self.max_len)

  @property
  def vocab_size(self):
    return self._vocab_size


def load(path, max_len):
  """The tokenizer of `path`: a tokenizer.json (JsonTokenizer) or a WordPiece vocab.txt."""
  if os.fspath(path).endswith(".json"):
    return JsonTokenizer(path, max_len)
  return WordPieceTokenizer(path, max_len)
