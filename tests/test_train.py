"""The training loop end to end (tiny model, built-in data) and its pieces: one run, resumed
further, checked against NumPy and fine-tuned on one device; the same run as two processes
(scripts/launch_local.sh, 2 x 4 CPU devices) trains and evaluates to the same numbers."""
import itertools
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import numpy_metrics
from configs import finetune_digits
from mmjax import modality
from mmjax import models
from mmjax.data import loader
from mmjax.train import metrics as metrics_lib
from mmjax.train import trainer
from mmjax.train import workdir as workdir_lib

pytestmark = pytest.mark.slow  # End-to-end training: `-m 'not slow'` skips it.

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The first launch of the trained run, as changes to the runlocal demo config: in this process
# (8 devices) and as two processes (test_two_processes_*). It evaluates and saves at its end.
# 8 steps: the two-process launch's steps cost seconds each (CPU collectives through gloo).
STEPS, RESUMED_STEPS = 8, 16
FIRST_LAUNCH = dict(total_steps=STEPS, log_every=1, checkpoint_every=STEPS, eval_every=STEPS)
# Generous: the first compile under a busy 2-core CI machine takes minutes.
MULTIPROCESS_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def trained(runlocal_config, tmp_path_factory):
  """An 8-step run, then the same workdir resumed to 16 steps: (workdir, the first launch's
  metrics.jsonl rows, all rows, the last evaluation's metrics)."""
  config = runlocal_config.copy_and_resolve_references()
  config.update(FIRST_LAUNCH)
  workdir = str(tmp_path_factory.mktemp("run"))
  trainer.train_and_evaluate(config, workdir)
  first_rows = metrics_lib.read_jsonl(workdir)
  config.total_steps = RESUMED_STEPS
  final = trainer.train_and_evaluate(config, workdir)
  return workdir, first_rows, metrics_lib.read_jsonl(workdir), final


def _restored(config, info, workdir, step):
  """(graphdef, params) of the model in `workdir`'s checkpoint `step`, read with orbax alone."""
  graphdef, params = nnx.split(nnx.eval_shape(
      lambda: models.make(config.model, info, rngs=nnx.Rngs(0))), nnx.Param)
  saved = ocp.StandardCheckpointer().restore(
      os.path.join(workdir, "checkpoints", str(step), "state"))["params"]
  # Saved nnx variables are {"value": array}.
  unwrap = lambda t: (t["value"] if set(t) == {"value"} else {k: unwrap(v) for k, v in t.items()}
                      ) if isinstance(t, dict) else t
  nnx.replace_by_pure_dict(params, unwrap(saved))
  return graphdef, params


def _test_split(config, info):
  """The whole test split as one batch."""
  split = next(loader.split_batches(config.data, info, "test", info.split_sizes["test"]))
  assert split["valid"].all()
  return split


@pytest.fixture(scope="module")
def split_embeddings(trained, runlocal_config):
  """The trained model (its last checkpoint) on the test split and the zero-shot prompts:
  ({modality: f32[N, E]}, labels int[N], prompt embeddings f32[classes, templates, E])."""
  config = runlocal_config
  info = loader.prepare(config.data)
  graphdef, params = _restored(config, info, trained[0], RESUMED_STEPS)
  split = _test_split(config, info)
  n = len(split["label"])
  templates = config.evals.zero_shot.templates
  prompts = [t.format(c) for c in info.class_names for t in templates]
  encoded = modality.get("text").encode(info, prompts)
  # One batch, so one compile: the split's rows, then the prompts as rows of text alone (their
  # blank image and audio get embedded too, and are ignored: each row is embedded alone).
  keys = modality.batch_keys(info.modalities)
  batch = {k: np.concatenate([split[k], np.zeros((len(prompts),) + split[k].shape[1:],
                                                 split[k].dtype)]) for k in keys}
  batch["text_ids"][n:], batch["text_mask"][n:] = encoded["text_ids"], encoded["text_mask"]
  z = jax.device_get(jax.jit(lambda p, b: nnx.merge(graphdef, p).embed(b))(params, batch))
  prompt_z = z["text"][n:].reshape(len(info.class_names), len(templates), -1)
  return {m: v[:n] for m, v in z.items()}, split["label"], prompt_z


def _losses(rows):
  return [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]


def test_loss_decreases(trained):
  _, first, rows, _ = trained
  assert len(_losses(first)) == STEPS
  losses = [loss for _, loss in _losses(rows)]  # Both launches: steps 1 to 16.
  assert len(losses) == RESUMED_STEPS
  assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


def test_writes_checkpoints_metrics_and_pictures(trained):
  workdir, _, _, final = trained
  assert sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))) == [
      STEPS, RESUMED_STEPS]
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["total_steps"] == STEPS  # The run's first launch; never rewritten.
  launches = workdir_lib.history(workdir)  # Each launch: the first, then the resume.
  assert [launch["config"]["total_steps"] for launch in launches] == [STEPS, RESUMED_STEPS]
  assert launches[1]["changed"] == {"total_steps": [STEPS, RESUMED_STEPS]}
  pictures = os.listdir(os.path.join(workdir, "images"))  # One at each evaluation.
  assert sorted(pictures) == [f"reconstruction_{STEPS:06d}.png",
                              f"reconstruction_{RESUMED_STEPS:06d}.png"]
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tensorboard")))
  directions = {k.split("/")[2] for k in final if k.startswith("eval/retrieval/")}
  assert directions == {f"{a}_to_{b}" for a in ("image", "text", "audio")
                        for b in ("image", "text", "audio") if a != b}


def test_retrieval_metrics_match_numpy(trained, split_embeddings):
  """R@k of the last evaluation equals R@k recomputed in NumPy from the restored checkpoint."""
  final = trained[3]
  z, labels, _ = split_embeddings
  same_class = labels[:, None] == labels[None, :]
  for a, b in itertools.permutations(z, 2):
    sims = z[a] @ z[b].T
    for k in (1, 5):
      name = f"eval/retrieval/{a}_to_{b}/r@{k}"
      numpy_metrics.check_recall(final[name], sims, same_class, k, what=name)


def test_resume_continues_from_checkpoint(trained):
  _, first_rows, all_rows, _ = trained
  steps = [s for s, _ in _losses(all_rows)]
  # The resumed run starts at step STEPS + 1: nothing before it is trained (or logged) twice.
  assert steps == list(range(1, RESUMED_STEPS + 1))
  resumed_first = dict(_losses(all_rows))[STEPS + 1]
  initial = np.mean([loss for _, loss in _losses(first_rows)][:3])
  assert resumed_first < initial  # Trained weights were restored, not re-initialized.


def test_zero_shot_classification_matches_numpy(trained, split_embeddings):
  """Each class is the normalized mean of its prompts' embeddings; an image or a sound gets the
  most similar (cosine) class: the accuracy equals the reported one."""
  final = trained[3]
  z, labels, prompt_z = split_embeddings
  classes = prompt_z.mean(1)
  classes /= np.linalg.norm(classes, axis=-1, keepdims=True)
  is_label = np.arange(len(classes))[None, :] == labels[:, None]
  for m in ("image", "audio"):
    name = f"eval/zero_shot/{m}/accuracy"
    numpy_metrics.check_recall(final[name], z[m] @ classes.T, is_label, 1, what=name)


def test_finetune_on_1_device_from_pretraining_on_8(trained, runlocal_config, tmp_path):
  """The trained run (8 fake devices) fine-tuned in a process with one device: the encoder and
  image tokenizer load, the head is new, the decoder is unused; it trains and evaluates."""
  pretrain_dir = trained[0]
  with open(os.path.join(pretrain_dir, "config.json")) as f:
    assert json.load(f)["mesh"]["data"] == -1  # All 8 devices of this process.
  env = os.environ | {"XLA_FLAGS": _without_device_count(os.environ["XLA_FLAGS"])}
  workdir = tmp_path / "finetune"
  subprocess.run(
      [sys.executable, "main.py", "--config=configs/finetune_digits.py:task=image,runlocal",
       f"--workdir={workdir}", f"--config.init_from={pretrain_dir}",
       f"--config.data.dir={runlocal_config.data.dir}"],
      cwd=REPO, env=env, check=True, timeout=600)
  with open(workdir / "init_from.json", encoding="utf-8") as f:
    report = json.load(f)
  assert report["checkpoint"].endswith(os.path.join("checkpoints", str(RESUMED_STEPS)))
  assert report["new"] == ["head/bias", "head/kernel", "head_norm/bias", "head_norm/scale"]
  assert any(n.startswith("encoder/blocks/") for n in report["loaded"])
  assert "tokenizers/image/patch_embed/kernel" in report["loaded"]
  assert any(n.startswith("decoder/") for n in report["unused"])
  assert not any(n.startswith("tokenizers/image") for n in report["unused"])
  assert report["resized"] == []
  rows = metrics_lib.read_jsonl(str(workdir))
  # The accuracy equals that of the fine-tuned checkpoint's logits, recomputed here.
  config = finetune_digits.get_config("task=image,runlocal")
  config.data.dir = runlocal_config.data.dir
  info = loader.prepare(config.data)
  graphdef, params = _restored(config, info, str(workdir), config.total_steps)
  split = _test_split(config, info)
  logits = jax.device_get(jax.jit(
      lambda p, b: nnx.merge(graphdef, p)(b)["classification"]["logits"])(
          params, {"image": split["image"], "label": split["label"]}))
  is_label = np.arange(logits.shape[1])[None, :] == split["label"][:, None]
  numpy_metrics.check_recall(rows[-1]["eval/classification/accuracy"], logits, is_label, 1,
                             what="eval/classification/accuracy")
  assert any("train/classification/accuracy" in r for r in rows)


def _without_device_count(xla_flags):
  """conftest's compiler flags without its 8 devices: a process with one CPU device."""
  return " ".join(f for f in xla_flags.split()
                  if not f.startswith("--xla_force_host_platform_device_count="))


# --- The first launch as two processes: scripts/launch_local.sh, 2 processes x 2 CPU devices.


def _launch_local(num_processes, args, log_dir):
  """Runs scripts/launch_local.sh; returns its exit status and combined output."""
  env = dict(os.environ, LOG_DIR=str(log_dir), LOCAL_DEVICES="2")
  # conftest's 8 devices are for this process: the script drops that flag, keeps the others
  # (the same compiler settings as the one-process run), and sets 2 per process.
  # Its own session, so that a timeout can stop the script and every process it started.
  proc = subprocess.Popen(
      [os.path.join(REPO, "scripts", "launch_local.sh"), str(num_processes), *args], cwd=REPO,
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      start_new_session=True)
  try:
    output, _ = proc.communicate(timeout=MULTIPROCESS_TIMEOUT_S)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    output, _ = proc.communicate()
    output += f"\n[timed out after {MULTIPROCESS_TIMEOUT_S} s]"
  return proc.returncode, output


def _logs(log_dir):
  return "\n".join(f"===== {p.name} (last 60 lines) =====\n" +
                   "\n".join(p.read_text(errors="replace").splitlines()[-60:])
                   for p in sorted(pathlib.Path(log_dir).glob("process_*.log")))


@pytest.fixture(scope="module")
def two_process_run(data_dir, tmp_path_factory):
  """The trained run's first launch (FIRST_LAUNCH) as one run of two processes."""
  workdir, log_dir = tmp_path_factory.mktemp("mp_run"), tmp_path_factory.mktemp("mp_logs")
  status, output = _launch_local(2, [
      "--config=configs/pretrain_digits.py:runlocal", f"--workdir={workdir}",
      f"--config.data.dir={data_dir}",
      *(f"--config.{key}={value}" for key, value in FIRST_LAUNCH.items())], log_dir)
  assert status == 0, f"launch_local.sh exited with {status}:\n{output[-4000:]}\n{_logs(log_dir)}"
  return str(workdir)


def test_two_processes_train_and_write_metrics_once(two_process_run):
  rows = metrics_lib.read_jsonl(two_process_run)
  train_steps = [r["step"] for r in rows if "train/loss" in r]
  assert train_steps == list(range(1, STEPS + 1))  # Once each: only process 0 writes.
  evals = [r for r in rows if any(k.startswith("eval/retrieval/") for k in r)]
  # One evaluation, at the last step; test_two_processes_match_one_process checks its values.
  assert [r["step"] for r in evals] == [STEPS]
  assert os.listdir(os.path.join(two_process_run, "images")) == [
      f"reconstruction_{STEPS:06d}.png"]


def test_two_processes_match_one_process(two_process_run, trained):
  """Same global batches as the first launch of `trained` (8 devices in this process), split
  over two processes of 2 devices each (fewer gloo ranks: a step costs a third): how the batch
  is split over devices and processes does not change the math."""
  two_rows, one_rows = metrics_lib.read_jsonl(two_process_run), trained[1]
  np.testing.assert_allclose([loss for _, loss in _losses(two_rows)],
                             [loss for _, loss in _losses(one_rows)], rtol=1e-5)
  # The evaluators too: each process fed its devices' rows of the same eval batches.
  two_evals, one_evals = ({k: v for r in rows for k, v in r.items() if k.startswith("eval/")}
                          for rows in (two_rows, one_rows))
  assert sorted(two_evals) == sorted(one_evals)
  for name, value in one_evals.items():
    np.testing.assert_allclose(two_evals[name], value, rtol=1e-4, atol=1e-6, err_msg=name)


def test_two_process_checkpoint_resumes_in_one_process(two_process_run, trained, runlocal_config,
                                                       tmp_path):
  """The two processes' step-8 checkpoint, resumed by this one process to step 16, trains on
  the batches `trained`'s own resume trained on: the data position follows from the step, not
  from a per-process iterator state (which tied a resume to the saving run's process count),
  and no checkpoint is set aside."""
  workdir = str(tmp_path / "run")
  shutil.copytree(two_process_run, workdir)
  config = runlocal_config.copy_and_resolve_references()
  config.update(FIRST_LAUNCH)
  config.total_steps = RESUMED_STEPS
  config.evals = ml_collections.ConfigDict()  # Compared below by the losses alone.
  trainer.train_and_evaluate(config, workdir)
  assert not os.path.exists(os.path.join(workdir, "checkpoints", "quarantine"))
  resumed = dict(_losses(metrics_lib.read_jsonl(workdir)))
  reference = dict(_losses(trained[2]))
  later = list(range(STEPS + 1, RESUMED_STEPS + 1))
  np.testing.assert_allclose([resumed[s] for s in later], [reference[s] for s in later],
                             rtol=1e-5)
