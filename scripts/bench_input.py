r"""Input throughput: examples/s of the training loader, per host and per worker, for each
preprocessing recipe; writes a Markdown report.

  .venv/bin/python scripts/bench_input.py --out=docs/input_throughput.md

Recipes: the built-in dataset's standard recipe (data.dir as configured; built on first use),
and the train recipes of configs/pretrain_tfds.py at their real sizes, on examples drawn once
from tfds.testing.mock_data and held in memory (so the numbers are the preprocessing, not mock
generation or storage). Each is timed with data.num_workers = 0 (the main process), 1, 2, ...
Compare with what the train step consumes (train/examples_per_sec in a run's metrics).
"""
import os
import platform
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import pretrain_digits  # noqa: E402
from configs import pretrain_tfds  # noqa: E402
from mmjax.data import loader  # noqa: E402
from mmjax.data import pipeline  # noqa: E402
from mmjax.data import sources  # noqa: E402
from mmjax.data import standard  # noqa: E402

_OUT = flags.DEFINE_string("out", "docs/input_throughput.md", "Report path.")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "data.num_workers values to time.")
_BATCHES = flags.DEFINE_integer("batches", 20, "Timed batches per measurement.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Examples per batch.")
_MOCK_EXAMPLES = flags.DEFINE_integer("mock_examples", 256, "Examples per mock dataset.")
_DATASETS = flags.DEFINE_list("datasets", ["mmjax_digits"] + sorted(standard.DATASETS),
                              "Recipes to time.")


def _rate(data_cfg, info, workers):
  """Examples/s of the train loader after a warm-up (worker start-up is not counted)."""
  data_cfg = data_cfg.copy_and_resolve_references()
  data_cfg.num_workers = workers
  it = iter(loader.train_loader(data_cfg, info, global_batch_size=_BATCH_SIZE.value, seed=0,
                                process_index=0, process_count=1))
  for _ in range(3):
    next(it)
  start = time.perf_counter()
  for _ in range(_BATCHES.value):
    next(it)
  rate = _BATCHES.value * _BATCH_SIZE.value / (time.perf_counter() - start)
  del it
  return rate


def _mock_dataset(name, data_cfg):
  """Materializes mock examples of `name` and points the loader at them."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tests import test_standard_datasets  # pylint: disable=g-import-not-at-top
  kwargs = dict(num_examples=_MOCK_EXAMPLES.value, policy=tfds.testing.MockPolicy.USE_CODE)
  if name == "coco_captions":
    kwargs["as_data_source_fn"] = lambda builder, split, **kw: [
        ex for _ in range(_MOCK_EXAMPLES.value // 24)
        for ex in test_standard_datasets._coco_examples(builder, split)]  # pylint: disable=protected-access
  held = {}
  with tfds.testing.mock_data(**kwargs):
    for split in standard.DATASETS[name].splits:
      source = sources.raw_source(data_cfg, split)
      held[split] = [source[i] for i in range(len(source))]
  sources.raw_source = lambda cfg, split: held[split]


def main(argv):
  del argv
  workers = [int(w) for w in _WORKERS.value]
  rows = []
  real_raw_source = sources.raw_source
  for name in _DATASETS.value:
    sources.raw_source = real_raw_source
    if name == "mmjax_digits":
      data_cfg = pretrain_digits.get_config().data
      note = "built-in data (stored PNG, int16 speech)"
    else:
      data_cfg = pretrain_tfds.get_config(f"dataset={name}").data
      data_cfg.dir = "/tmp/mmjax_bench_input"
      data_cfg.vocab_size = 500  # Learned from the mock captions.
      data_cfg.min_audio_seconds = 0.0  # Mock waveforms are a few dozen samples.
      _mock_dataset(name, data_cfg)
      note = f"mock {name} examples held in memory"
    info = loader.prepare(data_cfg)
    rates = [_rate(data_cfg, info, w) for w in workers]
    print(name, [f"{r:.0f}" for r in rates], flush=True)
    rows.append((name, data_cfg.pp_train or pipeline.default_pp(
        data_cfg, info.modalities, info.shapes, train=True), note, rates))

  lines = [
      "# Input throughput (written by scripts/bench_input.py)", "",
      f"Command: `.venv/bin/python scripts/bench_input.py --out={_OUT.value}`. Machine: "
      f"{platform.platform()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}. "
      f"Batches of {_BATCH_SIZE.value}, {_BATCHES.value} timed after 3 warm-up batches; one "
      "host. Per worker = examples/s divided by the number of worker processes (0 workers: "
      "everything in the main process).", "",
      "| dataset | " + " | ".join(f"{w} workers ex/s" for w in workers)
      + " | per worker at the most workers |", "|---|" + "---|" * (len(workers) + 1)]
  for name, _, _, rates in rows:
    lines.append(f"| {name} | " + " | ".join(f"{r:,.0f}" for r in rates)
                 + f" | {rates[-1] / max(workers[-1], 1):,.0f} |")
  lines += ["", "Recipes (data.pp_train):", ""]
  for name, pp, note, _ in rows:
    lines.append(f"- **{name}** ({note}): `{pp}`")
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  print(f"Wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
