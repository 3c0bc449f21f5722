r"""Pretraining on a standard TFDS dataset, read through its own TFDS builder.

  python main.py --config=configs/pretrain_tfds.py:dataset=coco_captions \
      --workdir=workdirs/coco --config.data.dir=gs://my-bucket/tensorflow_datasets

Prepare the dataset there first, on a machine with internet (README: Standard datasets);
nothing is downloaded at run time. The objectives follow the dataset's modalities: masked
modeling of each, and contrastive alignment where there are two (coco_captions: image-text;
librispeech: speech-transcript). Evaluation: retrieval on the held-out split where there are two
modalities (an example is its own class: a hit is its own image, by any of its captions), MAE
reconstructions for images.

Arguments (comma separated):
  dataset=NAME    coco_captions, librispeech, speech_commands, cifar10 or imagenet2012
                  (mmjax/data/standard.py); or a weighted mixture NAME:W+NAME:W+...,
                  e.g. coco_captions:0.6+librispeech:0.3+cifar10:0.1 (image-text pairs,
                  speech-transcript pairs and images alone): each example trains what it has.
                  The first entry is what the evaluators read; each modality's shapes come
                  from the first entry that has it.
  size=S          model size (tiny, S, B, L, H); default B.
  steps=N         training steps (default 100,000).
  strategy=fsdp   sharding strategy, as in pretrain_digits.
  runlocal        a few steps of the tiny model on small inputs (tests use it with mock data).
"""
import ml_collections

from configs import common
from configs import pretrain_digits
from mmjax import modality as modality_lib
from mmjax import objectives
from mmjax.data import standard
from mmjax.errors import UserError

# Every variant; tests/test_configs.py checks each one.
VARIANTS = tuple(f"dataset={name}" for name in sorted(standard.DATASETS)) + (
    "dataset=coco_captions,size=L,strategy=fsdp", "dataset=librispeech,runlocal",
    "dataset=coco_captions:0.6+librispeech:0.3+cifar10:0.1",
    "dataset=librispeech:0.5+cifar10:0.5,runlocal")

# Per dataset: image size, text length, seconds of audio, global batch.
SHAPES = {
    "coco_captions": dict(image=224, text=32, batch=1024),
    "librispeech": dict(text=128, audio=16.0, batch=256),
    "speech_commands": dict(audio=1.0, batch=1024),
    "cifar10": dict(image=32, batch=1024),
    "imagenet2012": dict(image=224, batch=4096),
}
_LABELS = "cast('int32', 'label')|cast('int32', 'image_id')"


def pp_strings(dataset, image, text, audio_len):
  """(train, eval) preprocessing op strings for `dataset` (after its adapter)."""
  known = standard.DATASETS[dataset]
  train, evals = [], []
  if "image" in known.modalities:
    if dataset == "cifar10":  # Native 32x32: only flips.
      train += [f"decode|resize({image})|flip_lr"]
      evals += [f"decode|resize({image})"]
    else:
      train += [f"decode|random_resized_crop({image}, scale=(0.3, 1.0))|flip_lr"]
      evals += [f"decode|resize({image})"]
  if "text" in known.modalities:
    train += [f"check_text|tokenize({text})"]
    evals += [f"check_text|tokenize({text})"]
  if "audio" in known.modalities:
    train += [f"check_audio|to_float|random_crop_or_pad({audio_len})|random_gain(-6, 3)"]
    evals += [f"check_audio|to_float|crop_or_pad({audio_len})"]
  return "|".join(train + [_LABELS]), "|".join(evals + [_LABELS])


def parse_mixture(spec):
  """'coco_captions:0.7+librispeech:0.3' -> [(name, weight)]; a bare name has weight 1."""
  entries = []
  for part in spec.split("+"):
    name, _, weight = part.partition(":")
    if name not in standard.DATASETS:
      raise UserError(f"Unknown dataset {name!r}: use one of {sorted(standard.DATASETS)}.")
    try:
      entries.append((name, float(weight or 1)))
    except ValueError:
      raise UserError(f"dataset={spec}: {weight!r} is not a weight (e.g. {name}:0.3).") from None
  return entries


def get_config(arg=None):
  arg = common.parse_arg(arg, dataset="cifar10", size="B", strategy="data_parallel",
                         steps=100_000, runlocal=False)
  entries = parse_mixture(arg.dataset)
  first = entries[0][0]  # What the evaluators read.
  modalities = modality_lib.ordered(
      {m for name, _ in entries for m in standard.DATASETS[name].modalities})
  # Each modality's shapes (and the batch size) come from the first entry that has it.
  shapes = {}
  for name, _ in entries:
    shapes = dict(SHAPES[name]) | shapes
  config = pretrain_digits.get_config(f"size={arg.size},strategy={arg.strategy}")
  config.total_steps = arg.steps
  config.batch_size = SHAPES[first]["batch"]
  config.log_every, config.eval_every, config.checkpoint_every = 100, 5000, 5000
  config.optimizer.warmup_steps = 5000
  config.model.image.patch_size = 4 if shapes.get("image") == 32 else 16
  if arg.runlocal:
    config.model.size = "tiny"
    config.model.image.patch_size = 4
    config.model.scan_layers = True
    config.total_steps, config.batch_size, config.log_every = 3, 8, 1
    config.eval_every = config.checkpoint_every = 3
    config.optimizer.warmup_steps = 1
    shapes.update(image=16, text=16, audio=0.5)

  data = config.data
  data.vocab_size = 200 if arg.runlocal else 8000
  data.text_len = shapes.get("text", data.text_len)
  rates = {standard.DATASETS[n].sample_rate for n, _ in entries} - {0}
  if len(rates) > 1:
    raise UserError(f"dataset={arg.dataset}: the audio of its entries is stored at "
                    f"{sorted(rates)} Hz; one model hears them all.")
  if rates:
    data.sample_rate = rates.pop()
    data.audio_seconds = shapes["audio"]
    config.model.audio.n_fft, config.model.audio.hop = 400, 160  # 25 ms windows, 10 ms hop.

  def point_at(cfg, name):
    """Sets the dataset fields of `cfg` (the data config, or a mixture entry) to `name`."""
    cfg.name = name
    cfg.train_split = standard.DATASETS[name].train_split
    cfg.pp_train, cfg.pp_eval = pp_strings(
        name, shapes.get("image"), data.text_len, round(data.audio_seconds * data.sample_rate))

  point_at(data, first)
  if len(entries) > 1:
    for name, weight in entries:
      data.mixture[name] = ml_collections.ConfigDict(dict(weight=weight))
      point_at(data.mixture[name], name)

  for name, objective in config.objectives.items():
    modality = objectives.modality(name)  # Of a masked-modeling objective.
    if modality and modality not in modalities:
      objective.weight = 0.0
  if len(modalities) < 2:
    config.objectives.contrastive.weight = 0.0

  del config.evals["zero_shot"]  # The built-in dataset's digit prompts; set your own here.
  evaluated = standard.DATASETS[first]
  config.evals.retrieval.split = evaluated.eval_split
  config.evals.reconstruction.split = evaluated.eval_split
  if len(evaluated.modalities) < 2:
    del config.evals["retrieval"]
  if "image" not in evaluated.modalities:
    del config.evals["reconstruction"]
  return config
