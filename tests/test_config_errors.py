"""Bad input gets one clear message before anything is built or compiled.

In-process cases count XLA lowerings and compilations with a jax.monitoring listener (which
test_the_compile_detectors_see_a_compile shows does fire); main.py cases run with
JAX_LOG_COMPILES=1 and look for JAX's compile log lines on stderr.
"""
import contextlib
import dataclasses
import os
import re
import subprocess
import sys

import jax
import pytest

from configs import pretrain_digits
from mmjax.data import loader
from mmjax.errors import UserError
from mmjax.models import sizes
from mmjax.parallel import mesh as mesh_lib
from mmjax.parallel import sharding
from mmjax.train import memory
from mmjax.train import optimizer
from mmjax.train import trainer
from mmjax.train import validate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# jax.monitoring events of lowering a jitted function to XLA and of compiling it: every compile
# (a persistent-cache hit included) is lowered first.
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
# What JAX logs for each compilation under JAX_LOG_COMPILES=1.
_COMPILE_LOG = re.compile(r"Compiling |Finished XLA compilation")


@contextlib.contextmanager
def _compiles():
  """Yields the list of compile events that happen inside the block."""
  events = []
  def listener(event, duration, **kwargs):  # pylint: disable=unused-argument
    if event in _COMPILE_EVENTS:
      events.append(event)
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield events
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def _refused(config, workdir, message):
  """train_and_evaluate raises UserError matching `message`, having compiled nothing."""
  with _compiles() as compiled:
    with pytest.raises(UserError, match=message) as raised:
      trainer.train_and_evaluate(config, str(workdir))
  assert not compiled, f"compiled before refusing: {compiled}"
  return str(raised.value)


def _run_main(*args):
  env = dict(os.environ, JAX_LOG_COMPILES="1")
  return subprocess.run([sys.executable, "main.py", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=120, check=False, env=env)


def _assert_one_line_error(result, message):
  """main.py exited 2 with `message` as one `error: ...` line, no traceback, no compile."""
  assert result.returncode == 2, result.stderr[-2000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert not _COMPILE_LOG.search(result.stderr)


def test_the_compile_detectors_see_a_compile():
  """The checks above would fail if something compiled: a fresh jit is seen by both."""
  with _compiles() as compiled:
    jax.jit(lambda x: x * 3 + 1)(1.0)
  assert compiled
  result = subprocess.run(
      [sys.executable, "-c", "import jax; jax.jit(lambda x: x * 3 + 1)(1.0)"], cwd=REPO,
      capture_output=True, text=True, timeout=120, check=True,
      env=dict(os.environ, JAX_LOG_COMPILES="1"))
  assert _COMPILE_LOG.search(result.stderr), result.stderr


@pytest.mark.parametrize("key, value, message", [
    ("objectives.masked_image.mask_ratio", 1.5, "config.objectives.masked_image.mask_ratio=1.5"),
    ("optimizer.lr", -0.001, "config.optimizer.lr=-0.001"),
    ("model.fusion", "fused", "config.model.fusion='fused'"),
    ("model.size", "XXL", "config.model.size='XXL': no model size of that name. Known: B, H"),
    ("batch_size", 12, "must be divisible by the data-parallel size 8"),
    ("parallel.grad_accum_steps", 3, "2 rows per device, which config.parallel.grad_accum_steps=3"),
    ("parallel.loop", "vmap", "config.parallel.loop='vmap' is out of range"),
    ("parallel.rules.mlp", "tensr", r"config.parallel.rules.mlp='tensr': \['tensr'\] are not"),
    ("mesh.fsdp", 3, "does not divide the 8 devices"),
    ("objectives.contrastive.impl", "ring", "config.objectives.contrastive.impl='ring'"),
    ("mesh.data", 4, "needs 4 devices, but 8 are available"),
    ("on_nonfinite", "ignore", "config.on_nonfinite='ignore' is out of range"),
    ("profile.steps", "5-7", "config.profile.steps='5-7': use 'START:END'"),
    ("parallel.rules.batch", "dat", r"config.parallel.rules.batch='dat': \['dat'\] are not"),
    ("objectives.masked_audio.norm_variance", "sample", "norm_variance='sample'"),
    ("model.image.patch_size", 0, "config.model.image.patch_size=0: must be a positive integer"),
    ("model.audio.patch_freq", 0, "config.model.audio.patch_freq=0: must be a positive integer"),
    ("evals.retrieval.type", "retrival", "config.evals.retrieval.type='retrival': no evaluator "
     "of that name. Did you mean 'retrieval'[?] Known: classification, reconstruction, "
     "retrieval, zero_shot."),
    ("model.name", "mtt", "config.model.name='mtt': no model of that name. Did you mean 'mmt'[?]"),
    # Else found only at the first evaluation, after training.
    ("evals.retrieval.batch_size", 0,
     "config.evals.retrieval.batch_size=0 is out of range: expected a positive integer"),
])
def test_out_of_range_values(tmp_path, key, value, message):
  config = pretrain_digits.get_config("runlocal")
  _set(config, key, value)
  _refused(config, tmp_path, message.replace("(", r"\(").replace(")", r"\)"))


def _set(config, key, value):
  node = config
  *parents, leaf = key.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value


@pytest.mark.parametrize("changes, message", [
    ({"evals.retrieval.split": "tset"},
     "config.evals.retrieval.split='tset': dataset 'mmjax_digits' has no split 'tset'; it has "
     "['test', 'train', 'validation']"),
    ({"evals.zero_shot.split": "test+valid[:10]"}, "config.evals.zero_shot.split="
     "'test+valid[:10]': dataset 'mmjax_digits' has no split 'valid'"),
    ({"data.train_split": "trian"},  # Was TFDS's traceback (ValueError: Unknown split).
     "data.train_split='trian': dataset 'mmjax_digits' has no split 'trian'; it has "
     "['test', 'train', 'validation']"),
    ({"model.image.patch_size": 3},
     "config.model.image.patch_size=3 does not divide the image size 8x8"),
    # 0.05 s at 8 kHz: 400 samples, less than one 512-sample window.
    ({"data.audio_seconds": 0.05, "data.min_audio_seconds": 0.01},
     "data.audio_seconds: audio of 400 samples at 8000 Hz gives 0 log-mel frames (model.audio."
     "n_fft=512, hop=256), fewer than one patch of model.audio.patch_time=4 frames; it needs at "
     "least 1280 samples (0.16 s)"),
    ({"data.audio_seconds": 0.02, "data.min_audio_seconds": 0.01,
      "model.audio.frontend": "waveform"},
     "data.audio_seconds: audio of 160 samples at 8000 Hz gives less than one frame of "
     "model.audio.frame_size=256 samples"),
])
def test_config_that_does_not_fit_the_dataset(runlocal_config, tmp_path, changes, message):
  """Known once the dataset is prepared, and refused then: not at the first eval, nor when
  the step is traced."""
  config = runlocal_config.copy_and_resolve_references()
  for key, value in changes.items():
    _set(config, key, value)
  _refused(config, tmp_path, re.escape(message))


def test_modality_the_dataset_lacks(runlocal_config, monkeypatch, tmp_path):
  real = loader.prepare
  monkeypatch.setattr(loader, "prepare", lambda cfg: dataclasses.replace(
      real(cfg), modalities=("image", "text")))
  _refused(runlocal_config.copy_and_resolve_references(), tmp_path,
           "config.objectives.masked_audio needs 'audio', but dataset "
           r"'mmjax_digits' has only \['image', 'text'\]; set its weight to 0")


def test_pmap_loop_is_data_parallel_only(tmp_path):
  config = pretrain_digits.get_config("runlocal,strategy=fsdp")
  config.parallel.loop = "pmap"
  _refused(config, tmp_path, "loop='pmap' is data parallel only")


def test_unknown_strategy(tmp_path):
  result = _run_main("--config=configs/pretrain_digits.py:runlocal,strategy=zero3",
                     f"--workdir={tmp_path}")
  _assert_one_line_error(result, "Unknown strategy 'zero3'")


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  config = pretrain_digits.get_config("runlocal")
  with pytest.raises(UserError, match="--workdir=.*cannot be written"):
    trainer.train_and_evaluate(config, str(blocker / "run"))


def test_unknown_config_key_from_the_command_line(tmp_path):
  result = _run_main("--config=configs/pretrain_digits.py:runlocal", f"--workdir={tmp_path}",
                     "--config.modle.size=S")
  _assert_one_line_error(result, "no key 'modle.size'. Did you mean 'model'?")


def test_unknown_config_argument(tmp_path):
  result = _run_main("--config=configs/pretrain_digits.py:runlocal,sise=S",
                     f"--workdir={tmp_path}")
  _assert_one_line_error(result, "Unknown config argument 'sise'")


@pytest.mark.parametrize("args, message", [
    (("--config=configs/pretrain_digits.py:runlocal", "--workdir={}", "--config.batch_size=abc"),
     "--config.batch_size=abc: config.batch_size takes an int (now 16), and 'abc' is not one."),
    (("--config=configs/nope.py", "--workdir={}"),
     "--config=configs/nope.py: no such file 'configs/nope.py'"),
    (("--config=configs/pretrain_digits.py:runlocal",), "--workdir is required"),
])
def test_bad_flags(tmp_path, args, message):
  """Each is one line and exit code 2, where absl and ml_collections would print a traceback
  (a value of the wrong type, a missing config file) or a usage dump with exit code 1 (a
  missing --workdir)."""
  result = _run_main(*(a.format(tmp_path) for a in args))
  _assert_one_line_error(result, message)


@pytest.mark.parametrize("arg, total_steps", [
    ("runlocal", 10), ("runlocal=on", 10), ("runlocal=TRUE", 10), ("runlocal=1", 10),
    ("runlocal=yes", 10), ("runlocal=off", 800), ("runlocal=False", 800), ("runlocal=0", 800),
    ("runlocal=No", 800), ("", 800)])
def test_boolean_config_arguments(arg, total_steps):
  assert pretrain_digits.get_config(arg).total_steps == total_steps


@pytest.mark.parametrize("arg, message", [
    ("runlocal=maybe", "Config argument runlocal='maybe' is not a boolean: use one of "
     "true/1/yes/on or false/0/no/off"),
    ("runlocal=", "Config argument 'runlocal=' has no value"),
    ("=on", "Config argument '=on' has no name"),
    ("size", "Config argument 'size' needs a value"),
])
def test_malformed_config_arguments(arg, message):
  with pytest.raises(UserError, match=re.escape(message)):
    pretrain_digits.get_config(arg)


# --- Will it fit? (validate.check_memory)


def _planned(config, info):
  """(mesh, abstract state, its shardings), as train_and_evaluate makes them: shapes only."""
  mesh = mesh_lib.make_mesh(config.mesh)
  validate.check_parallel(config, mesh)
  tx, _ = optimizer.make(config.optimizer, config.total_steps,
                         depth=sizes.of(config.model).depth)
  _, abstract_state = trainer.abstract_model(config, info, tx)
  rules = sharding.rules_from_config(config.parallel.rules)
  return mesh, abstract_state, sharding.param_shardings(abstract_state, mesh, rules)


@pytest.fixture(scope="module")
def huge(runlocal_config):
  """size=H, batch 128 on the demo data: (config, info, mesh, abstract state, shardings).
  Scanned layers: the same shapes and bytes, traced in a second rather than twenty."""
  config = pretrain_digits.get_config("runlocal,size=H")
  config.data.dir = runlocal_config.data.dir
  config.batch_size = 128
  config.model.scan_layers = True
  info = loader.prepare(config.data)
  return (config, info, *_planned(config, info))


def test_memory_refuses_a_model_that_does_not_fit(huge, monkeypatch):
  config, info, mesh, abstract_state, shardings = huge
  monkeypatch.setattr(memory, "device_bytes", lambda: (8 * memory.GIB, "a test's 8 GiB"))
  with _compiles() as compiled:
    with pytest.raises(UserError) as raised:
      validate.check_memory(config, info, mesh, abstract_state, shardings)
  assert not compiled
  message = str(raised.value)
  # H's 632M encoder parameters and the rest, float32, replicated on each of 8 devices; AdamW's
  # two moments; 16 rows per device of activations; the update's copy; on CPU, a save's host
  # copy (twice 7.3 GiB) and XLA's runtime, shared by the 8 devices (tests/test_memory.py).
  assert re.match(r"config.model.size='H' with config.batch_size=128 needs about 17.\d GiB per "
                  r"device \(parameters 2.4 GiB \+ optimizer state 4.9 GiB \+ gradients 2.4 GiB "
                  r"\+ activations 3.\d GiB \(a rough estimate\) \+ optimizer update 2.4 GiB "
                  r"\+ checkpoint host copy 1.8 GiB \+ XLA runtime and evaluation 0.2 GiB\); "
                  r"with a margin of 10% .*: 8.0 GiB \(a test's 8 GiB\)\. To fit: ",
                  message), message
  for knob in ("strategy=fsdp", "--config.model.remat=full", "--config.batch_size",
               "--config.model.dtype=bfloat16", "To run anyway: --config.check_memory=False."):
    assert knob in message


def test_memory_check_can_be_overridden(huge, monkeypatch):
  config, info, mesh, abstract_state, shardings = huge
  monkeypatch.setattr(memory, "device_bytes", lambda: (8 * memory.GIB, "a test's 8 GiB"))
  config = config.copy_and_resolve_references()
  config.check_memory = False
  validate.check_memory(config, info, mesh, abstract_state, shardings)  # Warns, runs.


def test_memory_estimate_scales_with_the_knobs(huge):
  """FSDP divides the state over the 8 devices, remat and a smaller batch the activations."""
  config, info, mesh, abstract_state, shardings = huge
  base = memory.estimate(config, info, mesh, abstract_state, shardings)
  fsdp = pretrain_digits.get_config("runlocal,size=H,strategy=fsdp")
  fsdp.batch_size = 128
  fsdp_mesh = mesh_lib.make_mesh(fsdp.mesh)
  fsdp_shardings = sharding.param_shardings(
      abstract_state, fsdp_mesh, sharding.rules_from_config(fsdp.parallel.rules))
  sharded = memory.estimate(fsdp, info, fsdp_mesh, abstract_state, fsdp_shardings)
  assert sharded["params"] < base["params"] / 7 and sharded["opt_state"] < base["opt_state"] / 7
  smaller = config.copy_and_resolve_references()
  smaller.model.remat = "full"
  assert memory.activation_bytes(smaller, info, mesh) < base["activations"] / 4
  smaller.batch_size = 64
  smaller.model.remat = "none"
  assert memory.activation_bytes(smaller, info, mesh) == pytest.approx(
      base["activations"] / 2, rel=0.01)


def test_memory_check_passes_the_tiny_config(runlocal_config):
  """With this machine's real memory: the demo's runlocal run needs a few MiB beside XLA's
  runtime."""
  config = runlocal_config.copy_and_resolve_references()
  info = loader.prepare(config.data)
  mesh, abstract_state, shardings = _planned(config, info)
  numbers = memory.estimate(config, info, mesh, abstract_state, shardings)
  assert 0 < numbers["total"] - numbers["runtime"] < 64 * 2**20
  validate.check_memory(config, info, mesh, abstract_state, shardings)


def test_train_and_evaluate_refuses_before_initializing(runlocal_config, monkeypatch, tmp_path):
  config = runlocal_config.copy_and_resolve_references()
  config.model.size, config.model.scan_layers, config.batch_size = "H", True, 128
  monkeypatch.setattr(memory, "device_bytes", lambda: (8 * memory.GIB, "a test's 8 GiB"))
  def never(*args, **kwargs):
    raise AssertionError("initialized a model that does not fit")
  monkeypatch.setattr(trainer, "initial_state", never)
  _refused(config, tmp_path, r"config.model.size='H' with config.batch_size=128 needs about")
