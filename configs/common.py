"""Pieces shared by the config files: string-argument parsing and common defaults."""
import dataclasses
import os

import ml_collections

from mmjax.errors import UserError


# What a boolean config argument accepts (case-insensitive); anything else is an error, so
# `runlocal=on` cannot quietly mean False and start the full run.
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def parse_arg(arg, **defaults):
  """Parses `configs/x.py:arg` strings such as "runlocal,size=S,fusion=joint".

  A bare word sets a boolean default to True; `k=v` sets k, converted to the type of its default
  (booleans take true/false, 1/0, yes/no, on/off). Unknown names, values that do not convert
  and malformed parts (`=S`, `size=`) are errors, so a typo in the argument fails as loudly as
  a typo in a key.
  """
  parsed = ml_collections.ConfigDict(defaults)
  for part in filter(None, (arg or "").split(",")):
    name, eq, value = (s.strip() for s in part.partition("="))
    if not name:
      raise UserError(f"Config argument {part!r} has no name: use name=value, comma separated.")
    if name not in defaults:
      raise UserError(
          f"Unknown config argument {name!r}; this config takes {sorted(defaults)}.")
    default = defaults[name]
    if not eq:
      if not isinstance(default, bool):
        raise UserError(f"Config argument {name!r} needs a value: {name}=...")
      parsed[name] = True
    elif not value:
      raise UserError(f"Config argument {part!r} has no value: {name}=...")
    elif isinstance(default, bool):
      if value.lower() not in _TRUE + _FALSE:
        raise UserError(f"Config argument {name}={value!r} is not a boolean: use one of "
                        f"{'/'.join(_TRUE)} or {'/'.join(_FALSE)} (or the bare word {name!r}).")
      parsed[name] = value.lower() in _TRUE
    else:
      try:
        parsed[name] = type(default)(value)
      except ValueError:
        raise UserError(f"Config argument {name}={value!r} is not a valid "
                        f"{type(default).__name__}, e.g. {name}={default}.") from None
  return parsed


def default_data_dir():
  """Where built datasets live unless `--config.data.dir` says otherwise."""
  return os.environ.get("MMJAX_DATA_DIR", os.path.expanduser("~/mmjax_data"))


# Mesh shapes of the named sharding strategies (mmjax/parallel/sharding.py); -1 takes the rest
# of the devices. Override any size with --config.mesh.<axis>=N.
STRATEGY_MESHES = {
    "data_parallel": {"data": -1, "fsdp": 1, "tensor": 1},
    "fsdp": {"data": 1, "fsdp": -1, "tensor": 1},
    "fsdp_tensor": {"data": 1, "fsdp": -1, "tensor": 2},
}


def parallel_config(strategy="data_parallel"):
  """(config.mesh, config.parallel) for a named sharding strategy: the overlay every
  training config applies (`strategy=` in its argument)."""
  from mmjax.parallel import sharding  # pylint: disable=g-import-not-at-top
  if strategy not in STRATEGY_MESHES:
    raise UserError(f"Unknown strategy {strategy!r}: use one of {list(STRATEGY_MESHES)}.")
  mesh = ml_collections.ConfigDict(STRATEGY_MESHES[strategy])
  parallel = ml_collections.ConfigDict(dict(
      loop="jit",  # 'jit' (any mesh) or 'pmap' (data parallel, replicated parameters).
      grad_accum_steps=1,  # Micro-batches per step (exact for contrastive losses: GradCache).
      rules=sharding.strategy_rules(strategy),  # Logical axis -> mesh axes.
  ))
  return mesh, parallel


# The six retrieval directions between image, text and audio, as the retrieval evaluator names
# them; the sweep files' metrics use them.
RETRIEVAL_DIRECTIONS = ("image_to_text", "text_to_image", "audio_to_text", "text_to_audio",
                        "image_to_audio", "audio_to_image")


# -- The ablations' scales: this machine's benchmark, or a pod's. -----------------------------
ABLATION_BASE = "configs/pretrain_scenes.py:ablation"
# Every ablation table's baselines, measured by each downstream stage's own protocol: the same
# encoder at random initialization (no init_from), and a linear classifier on the raw input.
BASELINES = {"random_init": {}, "raw_input": {"model.name": "raw"}}
ABLATION_SEEDS = (0, 1, 2)
# The pod scale's datasets (prepared with `tfds build`, README: Standard datasets).
POD_TRIMODAL = "coco_captions:0.7+librispeech:0.3"  # Image-text and speech-transcript pairs.


@dataclasses.dataclass(frozen=True)
class Scale:
  """Where a sweep file's points run: `base` (every modality), `image`, `image_text` and
  `audio` pretraining configs, their default `steps` x `batch` (a point that changes the batch keeps
  the examples), the retrieval `directions` their evaluators report, the image `zero_shot`
  metrics ('' where the scale has none), the downstream stages' configs (`transfer`: images,
  `audio_transfer`: audio) and the `baselines`. A sweep file's `get_sweep(arg)` takes the
  scale's name: '' (this machine: mmjax_scenes) or 'pod'."""
  name: str
  base: str
  image: str
  image_text: str
  audio: str
  steps: int
  batch: int
  directions: tuple
  zero_shot: tuple
  transfer: str  # '{mode}' and '{labels}' are filled in.
  audio_transfer: str
  few_labels: int  # Labelled examples per class of the few-label fine-tune.
  baselines: dict
  few_label_overrides: dict = dataclasses.field(default_factory=dict)

  def retrieval_r(self, k):
    """Sweep metric names of R@k in each of the scale's retrieval directions."""
    return tuple(f"pretrain/eval/retrieval/{d}/r@{k}" for d in self.directions)

  def shape_transfer(self):
    """The image sweeps' downstream stages (mae_mask_ratio, text_mask_ratio, objectives): a
    linear probe and a full fine-tune with few labels per class, under the same names in
    every sweep, so their baselines have the same configs: the runner runs each baseline once
    and the other sweeps take it from the first one's report."""
    from mmjax.sweep import Downstream  # pylint: disable=g-import-not-at-top
    return {"probe": Downstream(self.transfer.format(mode="probe", labels=0)),
            "finetune10": Downstream(self.transfer.format(mode="full", labels=self.few_labels),
                                     self.few_label_overrides)}


def scale(arg=""):
  """The Scale a sweep file's argument names: '' (the ablation scale) or 'pod'."""
  from configs import pretrain_scenes  # pylint: disable=g-import-not-at-top
  if arg in ("", None):
    return Scale(
        name="", base=ABLATION_BASE, image=ABLATION_BASE, image_text=ABLATION_BASE, audio=ABLATION_BASE,
        steps=500, batch=64, directions=RETRIEVAL_DIRECTIONS,
        zero_shot=tuple(f"pretrain/eval/zero_shot_{a}/image/accuracy"
                        for a in pretrain_scenes.ZERO_SHOT_PROMPTS),
        transfer="configs/finetune_scenes.py:attribute=shape,task=image,mode={mode},"
                 "labels={labels}",
        audio_transfer="configs/finetune_scenes.py:attribute=shape,task=audio,mode=full,"
                       "labels=0",
        few_labels=10, baselines=BASELINES)
  if arg == "pod":
    # Size B, 224 px images in 16 px patches, 1,024 pairs a step for 20,000 steps (20.5 M
    # examples: ~170 COCO epochs); ImageNet for transfer (a probe, and fine-tuning on 13
    # labels per class: the 1 % subset's size), Speech Commands for audio. Raw-input baselines
    # are for the small benchmark (a linear classifier on ImageNet pixels says little).
    tfds = "configs/pretrain_tfds.py:size=B,steps=20000,dataset="
    return Scale(
        name="pod", base=tfds + POD_TRIMODAL, image=tfds + "imagenet2012",
        image_text=tfds + "coco_captions",
        audio=tfds + "speech_commands", steps=20_000, batch=1024,
        directions=("image_to_text", "text_to_image"), zero_shot=(),
        transfer="configs/finetune_tfds.py:dataset=imagenet2012,mode={mode},labels={labels}",
        audio_transfer="configs/finetune_tfds.py:dataset=speech_commands,mode=full",
        few_labels=13, baselines={"random_init": {}},
        # 2,000 steps of 1,024 (~160 epochs of the 12,800 labelled images), not ImageNet's 20,000
        # steps of 4,096.
        few_label_overrides={"total_steps": 2000, "batch_size": 1024, "eval_every": 2000,
                             "checkpoint_every": 2000, "optimizer.warmup_steps": 200})
  raise UserError(f"Unknown sweep scale {arg!r}: use '' (this machine's benchmark) or 'pod'.")


def downstream(attribute="shape", task="image", mode="probe", labels=0):
  """A sweep's downstream stage on the scenes: configs/finetune_scenes.py with these
  arguments."""
  from mmjax.sweep import Downstream  # pylint: disable=g-import-not-at-top
  return Downstream(f"configs/finetune_scenes.py:attribute={attribute},task={task},mode={mode},"
                    f"labels={labels}")
