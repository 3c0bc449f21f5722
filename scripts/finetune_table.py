r"""Fine-tuning results on the built-in dataset: from the demo pretraining vs from scratch, with
1, 5 and all labels per class, for image and for audio classification; and a linear probe vs
full fine-tuning. Writes a Markdown report with the command of every number.

  .venv/bin/python scripts/finetune_table.py --init_from=workdirs/digits \
      --out=docs/finetune.md --workdirs=workdirs/finetune

Each cell is one run of `main.py --config=configs/finetune_digits.py:task=T,mode=M,labels=N`
(with --config.init_from for the pretrained rows), trained to the config's total_steps and
evaluated on the test split. Runs already finished in --workdirs are only evaluated again.
"""
import os
import platform
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import finetune_digits  # noqa: E402
from mmjax.train import trainer  # noqa: E402

_INIT_FROM = flags.DEFINE_string("init_from", "workdirs/digits", "The pretraining workdir.")
_OUT = flags.DEFINE_string("out", "docs/finetune.md", "Report path.")
_WORKDIRS = flags.DEFINE_string("workdirs", "workdirs/finetune", "Where the runs go.")
_TASKS = flags.DEFINE_list("tasks", ["image", "audio"], "Tasks (finetune_digits task=).")
_LABELS = flags.DEFINE_list("labels", ["1", "5", "0"], "Labels per class (0: all).")


def _run(task, mode, labels, pretrained):
  """(test accuracy, command) of one fine-tuning run (a run already finished in its workdir is
  only evaluated)."""
  arg = f"task={task},mode={mode},labels={labels}"
  config = finetune_digits.get_config(arg)
  name = f"{task}_{mode}_{labels or 'all'}_{'pretrained' if pretrained else 'scratch'}"
  workdir = os.path.join(_WORKDIRS.value, name)
  command = f"python main.py --config=configs/finetune_digits.py:{arg} --workdir={workdir}"
  if pretrained:
    config.init_from = _INIT_FROM.value
    command += f" --config.init_from={_INIT_FROM.value}"
  metrics = trainer.train_and_evaluate(config, workdir)
  return metrics["eval/classification/accuracy"], command


def main(argv):
  del argv
  labels = [int(n) for n in _LABELS.value]
  header = " | ".join(f"{n} / class" if n else "all labels" for n in labels)
  lines = ["# Fine-tuning on the built-in dataset", "",
           f"Test-split accuracy (10 classes, chance 0.10). Pretraining: `{_INIT_FROM.value}`. "
           f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores. Written by "
           "`scripts/finetune_table.py`.", "",
           f"| task | init | {header} |", "|---|---|" + "---|" * len(labels)]
  commands = []
  for task in _TASKS.value:
    for pretrained in (True, False):
      cells = []
      for n in labels:
        acc, command = _run(task, "full", n, pretrained)
        cells.append(f"{acc:.3f}")
        commands.append(f"- {acc:.3f}: `{command}`")
      init = "demo pretraining" if pretrained else "scratch"
      lines.append(f"| {task} | {init} | " + " | ".join(cells) + " |")
  lines += ["", "Linear probe (frozen pretrained encoder, only the head trains) vs full "
            "fine-tuning (layer-wise lr decay 0.75), all labels:", "",
            "| task | linear probe | full fine-tuning |", "|---|---|---|"]
  for task in _TASKS.value:
    probe, command = _run(task, "probe", 0, True)
    commands.append(f"- {probe:.3f}: `{command}`")
    full, _ = _run(task, "full", 0, True)  # Already trained above: evaluated only.
    lines.append(f"| {task} | {probe:.3f} | {full:.3f} |")
  lines += ["", "Commands:", ""] + commands
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
