r"""Tri-modal pretraining on the built-in scenes (mmjax_scenes, mmjax/data/scenes.py): the
ablations' benchmark, where a representation has to learn shapes, colours, positions and
counts that the captions and speech describe only in part.

  python main.py --config=configs/pretrain_scenes.py --workdir=workdirs/scenes

Builds the dataset on first use (10,000 rendered scenes, grammar captions, espeak-ng speech;
minutes on 2 cores), then trains as configs/pretrain_digits.py does, with instance-level
evaluation on the test split (held-out shape-colour pairs, caption frames and voices):
retrieval where a hit is the paired item itself, and zero-shot classification of each scene
attribute from prompts that no caption uses.

Arguments: those of configs/pretrain_digits.py (runlocal, ablation, size, fusion, contrastive,
audio, strategy).
  ablation   the ablations' scale (configs/ablations/): 500 steps of 64.
"""
import ml_collections

from configs import common
from configs import pretrain_digits
from mmjax.data import scenes

VARIANTS = ("", "runlocal", "ablation", "ablation,fusion=joint", "ablation,contrastive=siglip")

ABLATION_STEPS = 500

# Zero-shot prompts per attribute: none is a caption frame or phrase of the dataset's grammar.
ZERO_SHOT_PROMPTS = {
    "shape": ("a drawing whose main element is a {}", "mostly a {} here"),
    "colour": ("the most prominent thing is {}", "a picture dominated by a {} object"),
    "position": ("the main element sits at {}", "look at the {} of the picture"),
    "count": ("exactly {} things drawn", "{} shapes in total"),
    "size": ("the main element is {}", "one {} form"),
}


def get_config(arg=None):
  config = pretrain_digits.get_config(arg)
  arg = common.parse_arg(arg, **pretrain_digits.ARGS)
  config.data.name = "mmjax_scenes"
  # Captions run to 28 tokens in train and 33 in test ([CLS], [SEP] included; the test frames'
  # words are new to the vocab learned from train captions and split into pieces): 36 holds all.
  config.data.text_len = 36
  config.data.vocab_size = 300
  # Speech is 2 s on average, 95 % of it under 3.3 s.
  config.data.audio_seconds = 3.0
  config.data.examples_per_image = 1  # Unused by mmjax_scenes (one caption per scene).
  config.model.image.patch_size = 4  # 32 x 32 images: 64 patches.
  # 3 s at 8 kHz, 32 ms hop: 93 frames -> 11 x 4 patches of 8 frames x 8 mel bands.
  config.model.audio.patch_time = 8
  config.evals.retrieval.hit = "pair"
  if arg.ablation:  # 500 steps of 64 (32,000 scenes, 4 epochs): ~8 min on the 2-core CPU.
    config.total_steps = config.eval_every = config.checkpoint_every = ABLATION_STEPS
  config.evals.reconstruction.split = "validation"
  del config.evals["zero_shot"]
  for attribute, templates in ZERO_SHOT_PROMPTS.items():
    config.evals[f"zero_shot_{attribute}"] = ml_collections.ConfigDict(dict(
        type="zero_shot", split="test", batch_size=256, attribute=attribute,
        templates=templates, class_names=(), inputs=()))
  if arg.runlocal:
    config.data.max_images = 300
    for attribute in list(scenes.ATTRIBUTES)[2:]:  # Tests: two zero-shot evaluators suffice.
      del config.evals[f"zero_shot_{attribute}"]
  return config
