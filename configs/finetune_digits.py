r"""Fine-tuning on the built-in dataset: classify the digit from its image, its spoken word, its
caption, or image and speech fused.

  python main.py --config=configs/finetune_digits.py:task=image,labels=5 \
      --workdir=workdirs/ft_image_5 --config.init_from=workdirs/digits

Without --config.init_from the same run trains from scratch. The model is the pretraining
model's tokenizers and encoder plus a new head (mmjax/models/classifier.py); init_from restores
them by name and reports what it loaded (WORKDIR/init_from.json). Data and model shapes follow
configs/pretrain_digits.py, so its checkpoints fit.

Arguments (comma separated):
  task=image|audio|text|fused   the input modalities (fused: image and audio).
  mode=full|probe               full fine-tuning with layer-wise lr decay, or a linear probe
                                (frozen encoder, only the head trains).
  labels=N                      N labelled training examples per class (0: all of them).
  runlocal                      a few steps, for tests.
"""
import ml_collections

from configs import common
from configs import pretrain_digits
from mmjax.errors import UserError

TASKS = {"image": ("image",), "audio": ("audio",), "text": ("text",), "fused": ("image", "audio")}
VARIANTS = ("task=image", "task=audio,labels=5", "task=text,mode=probe", "task=fused",
            "task=audio,mode=probe,labels=1", "runlocal")


def get_config(arg=None):
  arg = common.parse_arg(arg, task="image", mode="full", labels=0, runlocal=False)
  if arg.task not in TASKS:
    raise UserError(f"Unknown task {arg.task!r}: use one of {sorted(TASKS)}.")
  if arg.mode not in ("full", "probe"):
    raise UserError(f"Unknown mode {arg.mode!r}: use 'full' or 'probe'.")
  config = pretrain_digits.get_config("runlocal" if arg.runlocal else "")
  config.total_steps = 300
  config.batch_size = 64
  config.log_every, config.eval_every, config.checkpoint_every = 50, 300, 300
  config.data.labels_per_class = arg.labels

  config.model.name = "classifier"
  config.model.inputs = TASKS[arg.task]

  config.objectives = ml_collections.ConfigDict(dict(
      classification=ml_collections.ConfigDict(dict(weight=1.0, label_smoothing=0.1))))
  opt = config.optimizer
  opt.warmup_steps = 30
  if arg.mode == "probe":
    opt.freeze, opt.layer_decay = "backbone", 1.0
    opt.lr, opt.weight_decay = 1e-2, 0.0
  else:
    opt.freeze, opt.layer_decay = "", 0.75
    opt.lr = 1e-3

  config.evals = ml_collections.ConfigDict(dict(
      classification=ml_collections.ConfigDict(dict(
          type="classification", split="test", batch_size=256))))
  if arg.runlocal:
    config.total_steps, config.batch_size, config.log_every = 4, 16, 2
    config.eval_every = config.checkpoint_every = 4
    opt.warmup_steps = 1
  return config
