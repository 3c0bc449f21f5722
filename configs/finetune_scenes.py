r"""Fine-tuning on the built-in scenes: classify one attribute of a scene (its main object's
shape, colour, size or position, or the number of objects) from its image, speech or caption.

  python main.py --config=configs/finetune_scenes.py:attribute=shape,mode=probe \
      --workdir=workdirs/scenes_probe_shape --config.init_from=workdirs/scenes

Without --config.init_from the encoder starts at random initialization (the random-init
baseline); with --config.model.name=raw the model is a linear classifier on the raw input
(pixels, log-mel, bag of words: the raw-input baseline), trained by the same protocol.
Accuracy on the test split (new scenes, caption frames and voices) and on test_novel (main
objects of shape-colour pairs training never shows: eval/classification_novel/accuracy).

Arguments (comma separated):
  attribute=shape|colour|size|position|count   the label (mmjax_scenes' class-label features).
  task=image|audio|text|fused                  the input modalities (fused: image and audio).
  mode=full|probe      full fine-tuning with layer-wise lr decay, or a linear probe (frozen
                       encoder, only the head trains).
  labels=N             N labelled training scenes per attribute value (0: all 8,000).
  hf=FOLDER            start from a transformers BERT-family checkpoint (task=text): its
                       weights (config.init_from=hf:FOLDER), architecture and vocab.txt.
  runlocal             a few steps, for tests.
"""
import os

import ml_collections

from configs import common
from configs import finetune_digits
from configs import pretrain_scenes
from mmjax import interop
from mmjax.interop import layout
from mmjax.data import scenes
from mmjax.errors import UserError

VARIANTS = ("attribute=shape,mode=probe", "attribute=count,labels=10", "task=audio,mode=probe",
            "attribute=colour,task=text,mode=probe", "runlocal")


def get_config(arg=None):
  arg = common.parse_arg(arg, attribute="shape", task="image", mode="full", labels=0, hf="",
                         runlocal=False)
  if arg.attribute not in scenes.ATTRIBUTES:
    raise UserError(f"Unknown attribute {arg.attribute!r}: use one of {list(scenes.ATTRIBUTES)}.")
  config = finetune_digits.get_config(
      f"task={arg.task},mode={arg.mode},labels={arg.labels}"
      + (",runlocal" if arg.runlocal else ""))
  pretrained = pretrain_scenes.get_config("runlocal" if arg.runlocal else "")
  # The pretraining run's data and model shapes, so its checkpoints fit.
  config.data = pretrained.data
  config.data.label_key = arg.attribute
  config.data.labels_per_class = arg.labels
  for modality in ("image", "audio"):
    config.model[modality] = pretrained.model[modality]
  # The same accuracy on scenes whose main object is a shape-colour pair training never shows.
  config.evals.classification_novel = ml_collections.ConfigDict(
      config.evals.classification.to_dict() | {"split": "test_novel"})
  if arg.hf:
    if arg.task != "text":
      raise UserError(f"hf={arg.hf}: a BERT-family checkpoint encodes text; use task=text.")
    folder = os.path.abspath(os.path.expanduser(arg.hf))
    layout.apply(config.model, interop.model_config(folder))
    config.init_from = f"hf:{folder}"
    config.data.vocab_file = os.path.join(folder, "vocab.txt")
  return config
