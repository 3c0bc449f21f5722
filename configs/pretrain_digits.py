r"""Tri-modal pretraining on the built-in spoken-digits dataset (the default demo).

  python main.py --config=configs/pretrain_digits.py --workdir=workdirs/digits

Builds the dataset on first use (sklearn's handwritten digits, templated captions, espeak-ng
speech), then pretrains the tiny model with masked image / text / audio modeling and
contrastive alignment of every modality pair, and evaluates zero-shot retrieval on the test
split (images and voices never seen in training).

Variants (`configs/pretrain_digits.py:ARGS`, comma separated):
  runlocal           a few steps, for smoke tests and CI (seconds).
  ablation           the ablations' scale (configs/ablations/): 300 steps of 64, evals at the
                     end (minutes per run on a 2-core CPU).
  size=S             model size from mmjax/models/sizes.py (tiny, S, B, L, H).
  fusion=joint       M3AE-style joint sequence for masked modeling (default: separate, VATT-style).
  contrastive=siglip sigmoid contrastive loss (default: infonce).
  audio=waveform     VATT-style raw-waveform audio frames (default: logmel).
  strategy=fsdp      sharding strategy: data_parallel (default), fsdp, fsdp_tensor
                     (mmjax/parallel/sharding.py); sets config.mesh and config.parallel.rules.
"""
import ml_collections

from configs import common
from mmjax.data import loader
from mmjax.models import mmt

# Every variant above; tests/test_configs.py checks each one.
VARIANTS = ("", "runlocal", "ablation", "size=S", "fusion=joint", "contrastive=siglip",
            "audio=waveform", "strategy=fsdp", "strategy=fsdp_tensor",
            "runlocal,fusion=joint,contrastive=siglip,audio=waveform")

# The arguments and their defaults (configs that build on this one parse the same).
ARGS = dict(runlocal=False, ablation=False, size="tiny", fusion="separate", contrastive="infonce",
            audio="logmel", strategy="data_parallel")


def get_config(arg=None):
  arg = common.parse_arg(arg, **ARGS)
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.total_steps = 800
  config.batch_size = 128
  config.log_every = 50
  config.eval_every = 200
  config.checkpoint_every = 200
  config.keep_checkpoints = 2
  config.mesh, config.parallel = common.parallel_config(arg.strategy)
  config.init_from = ""
  config.on_nonfinite = "stop"  # NaN/Inf loss or gradients: 'stop' (naming them) or 'skip'.
  config.record_example_ids = False  # WORKDIR/example_ids.jsonl: each step's examples.
  # Refuse, before anything is allocated, a run whose estimated memory per device (parameters,
  # optimizer state, gradients, activations, the update's copy and, on CPU, a save's host copy
  # and XLA's runtime: mmjax/train/memory.py, docs/memory.md) plus 10 % exceeds a device's;
  # False runs it anyway (the estimate of activations is rough).
  config.check_memory = True
  # A resume must keep the run's config (mmjax/train/workdir.py lists the keys it may change);
  # 'key1,key2' (or a subtree, 'optimizer') allows these changes on purpose.
  config.resume_overrides = ""
  # 'START:END': a JAX profiler trace of those steps into WORKDIR/tensorboard (TensorBoard's
  # profile plugin, or Perfetto); empty: none.
  config.profile = ml_collections.ConfigDict(dict(steps=""))

  config.data = loader.default_config()
  config.data.name = "mmjax_digits"
  config.data.dir = common.default_data_dir()
  # The longest built-in caption is 10 tokens with [CLS] and [SEP] (tests/test_configs.py):
  # rows of 10 compute no padding that is there in every row.
  config.data.text_len = 10

  config.model = mmt.default_config()
  config.model.size = arg.size
  config.model.fusion = arg.fusion
  config.model.audio.frontend = arg.audio
  # 64 ms windows, 32 ms hop: 30 frames per second of 8 kHz speech -> 28 patches of 4x8,
  # half the tokens (and half the step time) of a 16 ms hop at no cost in retrieval.
  config.model.audio.n_fft = 512
  config.model.audio.hop = 256

  config.objectives = ml_collections.ConfigDict()
  config.objectives.masked_image = ml_collections.ConfigDict(
      dict(weight=1.0, mask_ratio=0.75, norm_targets=True, norm_variance="unbiased"))
  config.objectives.masked_text = ml_collections.ConfigDict(
      dict(weight=0.5, mask_ratio=0.3))
  config.objectives.masked_audio = ml_collections.ConfigDict(
      dict(weight=1.0, mask_ratio=0.75, norm_targets=True, norm_variance="unbiased"))
  config.objectives.contrastive = ml_collections.ConfigDict(
      dict(weight=1.0, type=arg.contrastive, view="clean", impl="dense"))

  config.optimizer = ml_collections.ConfigDict(dict(
      lr=1e-3, warmup_steps=100, min_lr_ratio=0.01, weight_decay=0.05,
      b1=0.9, b2=0.95, grad_clip=1.0))

  config.evals = ml_collections.ConfigDict()
  config.evals.retrieval = ml_collections.ConfigDict(dict(type="retrieval", split="test", batch_size=256))
  config.evals.reconstruction = ml_collections.ConfigDict(dict(
      type="reconstruction", split="validation", num_images=8))
  # Zero-shot classification of test images and voices against prompts naming each digit.
  config.evals.zero_shot = ml_collections.ConfigDict(dict(
      type="zero_shot", split="test", batch_size=256,
      templates=("a handwritten {}", "the digit {}", "someone wrote the digit {}"),
      class_names=(), inputs=()))

  if arg.ablation:
    config.total_steps = 300
    config.batch_size = 64
    config.eval_every = config.checkpoint_every = 300
    config.optimizer.warmup_steps = 40
  if arg.runlocal:
    config.total_steps = 10
    config.batch_size = 16
    config.log_every = 5
    config.eval_every = 10
    config.checkpoint_every = 5
    config.optimizer.warmup_steps = 2
    config.data.max_images = 200
    config.data.examples_per_image = 1
  return config
