"""Text: word-piece rows [CLS] pieces [SEP] [PAD]... (text_ids int32[B, L], text_mask bool[B, L])
with learned positions, and masked language modeling (objective masked_text) hiding word
pieces in place, never the special tokens (BERT, M3AE). The vocab is a BERT-style vocab.txt
(data.vocab_file) or learned from the train captions when a dataset is prepared; or
data.vocab_file is a checkpoint's tokenizer.json (CLIP's BPE, ...), used as it is
(mmjax.data.text_tokenizer.JsonTokenizer)."""
import os

import numpy as np

from mmjax import modality
from mmjax.data import ops_text
from mmjax.data import sources
from mmjax.data import text_tokenizer
from mmjax.models import tokenizers

MIN_LEN = 3  # [CLS], one word piece, [SEP].


def texts(value):
  """A stored text feature (bytes or str, or a list of them) as a list of str."""
  items = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
  return [t.decode("utf-8", "ignore") if isinstance(t, (bytes, np.bytes_)) else str(t)
          for t in items]


class Text(modality.Modality):
  name = "text"
  order = 1  # Canonical order: image, text, audio (mmjax.modality).
  dtypes = {"text_ids": np.int32, "text_mask": bool}
  feature = "caption"
  masks_in_place = True
  reads_file = False
  info_fields = ("vocab_file", "vocab_size")

  def example_shapes(self, size):
    return {"text_ids": (size,), "text_mask": (size,)}

  def size(self, info):
    return info.shapes["text_ids"][0]

  def check_data_config(self, data_cfg, need):
    need(data_cfg.text_len >= MIN_LEN, "text_len",
         f"must be at least {MIN_LEN} ([CLS], one token, [SEP]), e.g. 16.")
    specials = len(text_tokenizer.SPECIAL_TOKENS)
    need(data_cfg.vocab_size > specials, "vocab_size",
         f"must exceed the {specials} special tokens, e.g. 200.")
    need(not data_cfg.vocab_file or os.path.isfile(os.path.expanduser(data_cfg.vocab_file)),
         "vocab_file", "no such file; give a BERT-style vocab.txt or a transformers "
         "tokenizer.json, or '' to learn a vocab from the training captions.")

  def stored_shapes(self, data_cfg, features):
    del features
    return self.example_shapes(data_cfg.text_len)

  def default_pp(self, data_cfg, shapes, *, train):
    del shapes, train
    return ["check_text", f"tokenize({data_cfg.text_len})"]

  def pp_context(self, data_cfg, info):
    del data_cfg
    return {"tokenizer_factory": lambda n: text_tokenizer.load(info.vocab_file, n)}

  def encode(self, info, strings):
    """A host batch of `strings` (text_ids, text_mask) as dataset `info` tokenizes them."""
    ids, mask = text_tokenizer.load(info.vocab_file, self.size(info)).encode(list(strings))
    return {"text_ids": np.asarray(ids, np.int32), "text_mask": np.asarray(mask, bool)}

  def describe(self, data_cfg, dataset):
    """The vocab: data.vocab_file, or one learned from the train captions and saved with the
    built data (each build and vocab size gets its own). A TFDS dataset's folder may be
    read-only (a bucket): its vocab goes beside it in data.dir."""
    vocab_file = os.path.expanduser(data_cfg.vocab_file)
    if not vocab_file:
      builtin = dataset.module is not None
      vocab_dir = (os.fspath(dataset.builder.data_dir) if builtin
                   else os.path.expanduser(data_cfg.dir))
      vocab_file = os.path.join(vocab_dir, f"wordpiece_{data_cfg.vocab_size}.txt" if builtin
                                else f"{data_cfg.name}_{data_cfg.train_split}_wordpiece_"
                                f"{data_cfg.vocab_size}.txt")
      if not os.path.exists(vocab_file):
        sources.writable_dir(vocab_dir, "the learned vocab is saved there (or set "
                             "data.vocab_file)")
        key = dataset.known.text_key if dataset.known else self.feature
        # Bad captions (empty, not UTF-8) are left out here; the loader reports them.
        captions = (c for ex in dataset.train_examples() for c in texts(ex[key]) if c.strip())
        text_tokenizer.learn_vocab(captions, data_cfg.vocab_size, vocab_file)
    vocab_size = text_tokenizer.load(vocab_file, data_cfg.text_len).vocab_size
    return {"vocab_file": vocab_file, "vocab_size": vocab_size}

  def build_features(self, opts):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    del opts
    return {self.feature: tfds.features.Text()}

  def read(self, value, opts):
    del opts
    return {self.feature: ops_text.get_check_text("text")({"text": value})["text"]}, None

  def token_grid(self, model_cfg, info):
    del model_cfg
    return (self.size(info),)

  def out_dim(self, model_cfg, info):
    del model_cfg
    return info.vocab_size

  def tokenizer(self, model_cfg, info, width, *, dtype, rngs):
    return tokenizers.TextTokenizer(info.vocab_size, self.size(info), width, dtype=dtype,
                                    rngs=rngs, **tokenizers.settings(model_cfg, self.name))


MODALITY = Text()
