r"""Pretraining on a standard TFDS dataset, read through its own TFDS builder.

  python main.py --config=configs/pretrain_tfds.py:dataset=coco_captions \
      --workdir=workdirs/coco --config.data.dir=gs://my-bucket/tensorflow_datasets

Prepare the dataset there first, on a machine with internet (README: Standard datasets);
nothing is downloaded at run time. The objectives follow the dataset's modalities: masked
modeling of each, and contrastive alignment where there are two (coco_captions: image-text;
librispeech: speech-transcript). Evaluation: retrieval on the held-out split where there are two
modalities (an example is its own class: a hit is its own pair), MAE reconstructions for images.

Arguments (comma separated):
  dataset=NAME    coco_captions, librispeech, speech_commands, cifar10 or imagenet2012
                  (mmjax/data/standard.py).
  size=S          model size (tiny, S, B, L, H); default B.
  strategy=fsdp   sharding strategy, as in pretrain_digits.
  runlocal        a few steps of the tiny model on small inputs (tests use it with mock data).
"""
from configs import common
from configs import pretrain_digits
from mmjax.data import standard
from mmjax.errors import UserError

# Every variant; tests/test_configs.py checks each one.
VARIANTS = tuple(f"dataset={name}" for name in sorted(standard.DATASETS)) + (
    "dataset=coco_captions,size=L,strategy=fsdp", "dataset=librispeech,runlocal")

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


def get_config(arg=None):
  arg = common.parse_arg(arg, dataset="cifar10", size="B", strategy="data_parallel",
                         runlocal=False)
  if arg.dataset not in standard.DATASETS:
    raise UserError(f"Unknown dataset {arg.dataset!r}: use one of {sorted(standard.DATASETS)}.")
  known = standard.DATASETS[arg.dataset]
  shapes = dict(SHAPES[arg.dataset])
  config = pretrain_digits.get_config(f"size={arg.size},strategy={arg.strategy}")
  config.total_steps = 100_000
  config.batch_size = shapes["batch"]
  config.log_every, config.eval_every, config.checkpoint_every = 100, 5000, 5000
  config.optimizer.warmup_steps = 5000
  config.model.image.patch_size = 4 if arg.dataset == "cifar10" else 16
  if arg.runlocal:
    config.model.size = "tiny"
    config.model.image.patch_size = 4
    config.model.scan_layers = True
    config.total_steps, config.batch_size, config.log_every = 3, 8, 1
    config.eval_every = config.checkpoint_every = 3
    config.optimizer.warmup_steps = 1
    shapes.update(image=16, text=16, audio=0.5)

  data = config.data
  data.name = arg.dataset
  data.train_split = known.train_split
  data.vocab_size = 200 if arg.runlocal else 8000
  data.text_len = shapes.get("text", data.text_len)
  if known.sample_rate:
    data.sample_rate = known.sample_rate
    data.audio_seconds = shapes["audio"]
    config.model.audio.n_fft, config.model.audio.hop = 400, 160  # 25 ms windows, 10 ms hop.
  data.pp_train, data.pp_eval = pp_strings(
      arg.dataset, shapes.get("image"), data.text_len,
      round(data.audio_seconds * data.sample_rate))

  for name, objective in config.objectives.items():
    modality = {"masked_image": "image", "masked_text": "text", "masked_audio": "audio"}.get(name)
    if modality and modality not in known.modalities:
      objective.weight = 0.0
  if len(known.modalities) < 2:
    config.objectives.contrastive.weight = 0.0

  config.evals.retrieval.split = known.eval_split
  config.evals.reconstruction.split = known.eval_split
  if len(known.modalities) < 2:
    del config.evals["retrieval"]
  if "image" not in known.modalities:
    del config.evals["reconstruction"]
  return config
