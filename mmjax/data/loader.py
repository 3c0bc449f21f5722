"""From a data config to host batches: build the dataset once, then read it with grain.

  info = loader.prepare(config.data)          # builds on first use, learns the vocab
  for batch in loader.train_loader(config.data, info, global_batch_size=128, seed=0): ...
  for batch in loader.split_batches(config.data, info, "test", 256): ...   # evaluation

This module is the data package's front door; the work is split by job:
  sources.py   which datasets there are (mmjax_<x> builders, prepared TFDS datasets) and
               opening their stored examples;
  prepare.py   config checks, building on first use, DatasetInfo (info.py) and the shapes
               the preprocessing makes, data.mixture;
  pipeline.py  one example: read, preprocess (ops.py, ops_image / ops_text / ops_audio),
               check, report or replace bad ones;
  sampling.py  the training stream (shuffle, mixture, this process's rows) and eval batches.
What each modality contributes (batch keys, default ops, its part of DatasetInfo) comes from
the modality registry, mmjax.modality. TFDS is imported inside functions: configs import
this module for default_config(), and TFDS takes a while to import.

Host batches are dicts of numpy arrays (B: this process's batch): each modality's keys
(mmjax.modalities; image uint8[B,H,W,C], text_ids int32[B,L], text_mask bool[B,L], audio
float32[B,T], audio_mask bool[B,T]), label int32[B], image_id int32[B], index int32[B] (the
example's position in its split), has_<modality> bool[B] for each modality when a data.mixture
entry lacks some modality (False where the example's dataset lacks it; its keys then hold
zeros); train batches add skipped int32[B] (bad examples replaced at that position) and source int32[B]
  (the data.mixture entry it came from, 0 without one), split_batches add valid bool[B].

Bad examples (an image that does not decode, empty or non-UTF-8 text, silent or too-short
audio, a wrong sample rate) are an error naming the split and example (data.on_bad_example=
'error'), or are skipped and counted ('skip'): in training, another example drawn at random
(from the seed and stream position) takes the bad one's place, and the train state counts the
replacements (train/bad_examples_skipped); evaluation leaves them out.
"""
import ml_collections

from mmjax.data.info import DatasetInfo  # pylint: disable=unused-import
from mmjax.data.prepare import mixture_components  # pylint: disable=unused-import
from mmjax.data.prepare import prepare  # pylint: disable=unused-import
from mmjax.data.sampling import labelled_subset  # pylint: disable=unused-import
from mmjax.data.sampling import split_batches  # pylint: disable=unused-import
from mmjax.data.sampling import batches_from  # pylint: disable=unused-import
from mmjax.data.sampling import train_batches  # pylint: disable=unused-import
from mmjax.data.sampling import train_loader  # pylint: disable=unused-import
from mmjax.data.sources import data_source  # pylint: disable=unused-import


def default_config():
  """The data settings every training config has (`config.data`)."""
  return ml_collections.ConfigDict(dict(
      name="mmjax_digits",  # `mmjax_<x>`: the builder in mmjax/data/<x>.py; else a TFDS name.
      train_split="train",
      dir="",  # Where built datasets live; configs set it (configs.common.default_data_dir).
      sample_rate=8000,  # Hz of the stored speech; part of the built dataset's identity.
      audio_seconds=1.0,  # Waveforms are cropped/padded to this length.
      text_len=16,  # Token rows: [CLS] wordpieces [SEP] [PAD]...
      # A BERT-style vocab.txt or a transformers tokenizer.json; '' learns a WordPiece vocab
      # from the train captions.
      vocab_file="",
      vocab_size=200,  # Upper bound when learning the vocab.
      max_images=0,  # 0: all images; otherwise a smaller dataset (its own build).
      examples_per_image=3,  # Train split: pairings (caption, voice) per image.
      augment=True,  # Random audio gain and start offset in training batches.
      min_audio_seconds=0.1,  # Shorter waveforms are bad examples.
      on_bad_example="error",  # 'error': stop, naming the example; 'skip': skip and count.
      num_workers=0,  # grain worker processes; 0 reads and preprocesses in the main process.
      # The stored ClassLabel feature that is the label (classification, labels_per_class,
      # zero-shot), e.g. one of mmjax_scenes' attributes: "shape", "colour", "count".
      label_key="label",
      labels_per_class=0,  # >0: train on that many examples of each class only (few-shot).
      # Preprocessing as op strings (mmjax/data/ops.py), e.g. "decode|resize(32)|...";
      # '' is the standard recipe for the dataset (pipeline.default_pp).
      pp_train="",
      pp_eval="",
      # Training on a weighted mixture: {key: ConfigDict(weight=w, <data fields to change>)},
      # e.g. mixture.coco = dict(weight=0.8, name="coco_captions", pp_train=...). Each entry is
      # this data config with its fields changed; this config itself is what evaluators read.
      # Entries may differ in modalities (image-text pairs, audio-text pairs, images alone):
      # batches carry their union and has_<modality> flags. Entries that share a modality must
      # make the same shapes for it; all share one vocab. {}: none.
      mixture=ml_collections.ConfigDict(),
  ))
