r"""Fine-tuning on a labelled standard TFDS dataset: cifar10 or imagenet2012 (images),
speech_commands (audio).

  python main.py --config=configs/finetune_tfds.py:dataset=cifar10,labels=10 \
      --workdir=workdirs/ft_cifar --config.data.dir=/data/tfds \
      --config.init_from=workdirs/cifar_pretrain

Data, model size and shapes follow configs/pretrain_tfds.py for the same dataset, so its
checkpoints fit (init_from reports what it loaded; see configs/finetune_digits.py).

Arguments (comma separated):
  dataset=NAME     cifar10, imagenet2012 or speech_commands.
  mode=full|probe  full fine-tuning with layer-wise lr decay, or a linear probe.
  labels=N         N labelled examples per class (0: all).
  size=S           model size, as in pretraining (default B).
  runlocal         a few steps of the tiny model (tests, with mock data).
"""
import ml_collections

from configs import common
from configs import pretrain_tfds
from mmjax.data import standard
from mmjax.errors import UserError

LABELLED = ("cifar10", "imagenet2012", "speech_commands")
VARIANTS = ("dataset=cifar10", "dataset=imagenet2012,mode=probe",
            "dataset=speech_commands,labels=5", "dataset=cifar10,runlocal")


def get_config(arg=None):
  arg = common.parse_arg(arg, dataset="cifar10", mode="full", labels=0, size="B",
                         runlocal=False)
  if arg.dataset not in LABELLED:
    raise UserError(f"dataset={arg.dataset!r}: fine-tuning needs class labels; use one of "
                    f"{list(LABELLED)}.")
  if arg.mode not in ("full", "probe"):
    raise UserError(f"Unknown mode {arg.mode!r}: use 'full' or 'probe'.")
  config = pretrain_tfds.get_config(
      f"dataset={arg.dataset},size={arg.size}" + (",runlocal" if arg.runlocal else ""))
  known = standard.DATASETS[arg.dataset]
  config.total_steps = 20_000 if arg.dataset == "imagenet2012" else 5_000
  config.eval_every = config.checkpoint_every = 1_000
  config.optimizer.warmup_steps = 500
  config.data.labels_per_class = arg.labels
  config.model.name = "classifier"
  config.model.inputs = known.modalities
  config.objectives = ml_collections.ConfigDict(dict(
      classification=ml_collections.ConfigDict(dict(weight=1.0, label_smoothing=0.1))))
  opt = config.optimizer
  if arg.mode == "probe":
    opt.freeze, opt.layer_decay, opt.lr, opt.weight_decay = "backbone", 1.0, 1e-2, 0.0
  else:
    opt.freeze, opt.layer_decay, opt.lr = "", 0.75, 5e-4
  config.evals = ml_collections.ConfigDict(dict(
      classification=ml_collections.ConfigDict(dict(
          type="classification", split=known.eval_split, batch_size=256,
          top_k=(1, 5)))))  # Top-1 and top-5, ImageNet's protocol.
  if arg.runlocal:
    config.total_steps, config.batch_size, config.log_every = 3, 8, 1
    config.eval_every = config.checkpoint_every = 3
    opt.warmup_steps = 1
  return config
