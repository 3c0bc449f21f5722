"""One training step, many ways of running it: the same losses on every mesh, under pmap and
with gradient accumulation (GradCache: dense under jit, the chunked rings under pmap), with
some examples lacking a modality, InfoNCE and SigLIP (its shared bias) side by side, and a
third objective that mixes rows; FSDP really splits the parameters."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mmjax import objectives
from mmjax.data import loader
from mmjax.objectives import contrastive as contrastive_lib
from mmjax.parallel import mesh as mesh_lib
from mmjax.parallel import sharding
from mmjax.train import loops
from mmjax.train import optimizer
from mmjax.train import trainer

pytestmark = pytest.mark.slow  # End-to-end training: `-m 'not slow'` skips it.

STEPS = 5
# What run_steps records at each step.
LOSSES = ("train/loss", "train/loss/batch_centre", "train/loss/contrastive",
          "train/loss/siglip")


class _BatchCentre:
  """A toy objective that mixes rows, registered from here (mmjax/ is not edited): each image
  embedding is pulled to the mean text embedding of the whole global batch. Every run below
  trains it next to the built-in objectives: on a mesh or under pmap its mean must be over the
  global batch, and with gradient accumulation (accum2) too; treated as row-local,
  accumulation would use each micro-batch's mean instead, and the losses would differ."""
  MIXES_ROWS = True
  ROW_INPUTS = ("embeddings",)
  MASK_INPUTS = ("present",)

  @staticmethod
  def embedding_view(cfg):
    del cfg
    return "clean"

  @staticmethod
  def loss(outputs, cfg, ctx):
    del cfg
    z, present = outputs["embeddings"], outputs["present"]
    has_text = present["text"].astype(jnp.float32)
    has_image = present["image"].astype(jnp.float32)
    mean_text = (ctx.total((z["text"] * has_text[:, None]).sum(0))
                 / jnp.maximum(ctx.total(has_text.sum()), 1.0))
    distance = ((z["image"] - mean_text) ** 2).sum(-1)
    return objectives.Terms(sums={"loss": ((distance * has_image).sum(), has_image.sum())},
                            values={})


@pytest.fixture(scope="module")
def setup(runlocal_config):
  """Image and text only, layers scanned: a third of the compile time of the full model, and
  every objective kind (masked patches, masked words, contrastive) is still there, with two
  more row-mixing objectives registered for this file's runs: _BatchCentre, and the
  contrastive objective a second time as 'siglip' (type siglip: its learned bias is a shared
  input, which accumulation must sum over micro-batches), so one compile checks both losses."""
  objectives.register("batch_centre", _BatchCentre)
  objectives.register("siglip", contrastive_lib)
  config = runlocal_config.copy_and_resolve_references()
  config.batch_size = 32
  config.model.scan_layers = True
  config.objectives.masked_audio.weight = 0.0
  config.objectives.batch_centre = ml_collections.ConfigDict(dict(weight=0.5))
  config.objectives.siglip = config.objectives.contrastive.copy_and_resolve_references()
  config.objectives.siglip.update(type="siglip", weight=0.5)
  info = loader.prepare(config.data)
  it = iter(loader.train_loader(config.data, info, global_batch_size=config.batch_size, seed=0))
  drop = ("audio", "audio_mask")
  batches = [{k: v for k, v in trainer.with_rows(next(it), config.batch_size).items()
              if k not in drop} for _ in range(STEPS)]
  # As in a mixture whose entries lack a modality: some rows have no text, others no image,
  # so every path below also carries the per-example presence flags through.
  for batch in batches:
    batch["has_text"] = batch["row"] % 4 != 1
    batch["has_image"] = batch["row"] % 5 != 2
  yield config, info, batches
  for name in ("batch_centre", "siglip"):  # The registry is global: other files never see them.
    objectives.unregister(name)


def run_steps(config, info, batches, *, mesh=None, devices=None, strategy="data_parallel",
              loop="jit", accum=1, contrastive="dense", batch_rule=None):
  """Trains len(batches) steps from the same initialization; returns (losses f32[steps,
  len(LOSSES)], params, state).
  batch_rule: config.parallel.rules.batch (None: the strategy's)."""
  config = config.copy_and_resolve_references()
  config.parallel.grad_accum_steps = accum
  config.objectives.contrastive.impl = config.objectives.siglip.impl = contrastive
  config.parallel.rules = sharding.strategy_rules(strategy)
  if batch_rule is not None:
    config.parallel.rules.batch = batch_rule
  devices = jax.devices() if devices is None else devices
  mesh = mesh_lib.make_mesh(mesh or {"data": -1}, devices=devices)
  rules = sharding.rules_from_config(config.parallel.rules)
  tx, lr = optimizer.make(config.optimizer, config.total_steps)
  graphdef, abstract_state = trainer.abstract_model(config, info, tx)
  shardings = sharding.param_shardings(abstract_state, mesh, rules)
  state = trainer.initial_state(config, info, tx, shardings)
  losses = []
  if loop == "pmap":
    pstate = loops.PmapState(shardings)
    step = loops.pmap_train_step(config, info, tx, lr, graphdef)
    state = pstate.to_pmap(state)
    for batch in batches:
      state, metrics = step(state, pstate.batch(batch))
      losses.append([float(metrics[k][0]) for k in LOSSES])
    state = pstate.to_global(state)
  else:
    step = trainer.jit_train_step(config, info, mesh, tx, lr, graphdef, shardings)
    batch_axes = mesh_lib.batch_axes(config.parallel.rules)
    rows_per_shard = config.batch_size // mesh_lib.data_parallel_size(mesh, batch_axes)
    with sharding.use(mesh, rules):
      for batch in batches:
        batch = mesh_lib.host_to_global(batch, mesh, batch_axes)
        # The batch lives where the rule says (not on data x fsdp whatever the rule).
        assert {s.data.shape[0] for s in batch["row"].addressable_shards} == {rows_per_shard}
        state, metrics = step(state, batch)
        losses.append([float(metrics[k]) for k in LOSSES])
  return np.array(losses), jax.device_get(state["params"]), state


@pytest.fixture(scope="module")
def reference(setup):
  """One device, whole batches."""
  return run_steps(*setup, devices=jax.devices()[:1])


@pytest.mark.parametrize("mesh,strategy,loop,accum,contrastive,batch_rule", [
    # Data parallel over 4 with FSDP over 2, 2 micro-batches (accumulation under jit).
    ({"data": 4, "fsdp": 2}, "fsdp", "jit", 2, "dense", None),
    ({"data": 2, "fsdp": 2, "tensor": 2}, "fsdp_tensor", "jit", 1, "dense", None),
    # The batch on data only (fsdp groups hold the same rows): the chunked ring runs over data.
    ({"data": 2, "fsdp": 4}, "fsdp", "jit", 1, "chunked", "data"),
    # The chunked rings on the whole batch's embeddings that accumulation gathered (GradCache).
    ({"data": 8}, "data_parallel", "pmap", 2, "chunked", None),
], ids=["data4_fsdp2_accum2", "data2_fsdp2_tensor2", "data2_fsdp4_chunked_batch_on_data",
        "pmap8_chunked_accum2"])
def test_same_losses_as_one_device(setup, reference, mesh, strategy, loop, accum, contrastive,
                                   batch_rule):
  ref_losses, ref_params, _ = reference
  losses, params, _ = run_steps(*setup, mesh=mesh, strategy=strategy,
                                loop=loop, accum=accum, contrastive=contrastive,
                                batch_rule=batch_rule)
  print(f"{loop} {mesh} {strategy} accum={accum} {contrastive} batch={batch_rule}: {losses}")
  assert losses[-1, 0] < losses[0, 0]  # It trains.
  assert (losses[:, 1:] > 0).all()  # The row-mixing objectives are there.
  np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
  # Adam turns a rounding-level gradient difference on a near-zero gradient into up to a
  # step of lr (1e-3 here); parameters agree far below that.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4),
               params, ref_params)


def test_fsdp_splits_every_large_parameter_and_its_optimizer_state(setup):
  config, info, _ = setup
  tx, _ = optimizer.make(config.optimizer, config.total_steps)
  mesh = mesh_lib.make_mesh({"fsdp": 8})
  rules = sharding.rules_from_config(sharding.strategy_rules("fsdp"))
  _, abstract_state = trainer.abstract_model(config, info, tx)
  state = trainer.initial_state(config, info, tx,
                                sharding.param_shardings(abstract_state, mesh, rules))
  leaves = jax.tree_util.tree_leaves_with_path({"params": state["params"],
                                                "opt_state": state["opt_state"]})
  large = [(jax.tree_util.keystr(p), x) for p, x in leaves if x.size >= 1024]
  assert len(large) > 30
  for path, x in large:
    per_device = {s.data.size for s in x.addressable_shards}
    assert per_device == {x.size // 8}, (path, x.shape, x.sharding.spec)


class _FakeGpu:
  """Stands in for a GPU device of a multi-node run: only what the mesh helper reads."""
  platform, device_kind, slice_index = "gpu", "fake", 0

  def __init__(self, i, process):
    self.id, self.process_index = i, process


def test_data_axis_spans_nodes_and_fsdp_stays_within_one():
  devices = [_FakeGpu(i, process=i // 4) for i in range(8)]  # 2 nodes x 4 GPUs.
  grid = mesh_lib.device_grid((2, 4, 1), devices)
  for row in grid[:, :, 0]:  # Each fsdp group (a row along data) sits on one node.
    assert len({d.process_index for d in row}) == 1
  assert {d.process_index for d in grid[:, 0, 0]} == {0, 1}
  with pytest.raises(mesh_lib.UserError, match="multiple of the 2 slices / nodes"):
    mesh_lib.device_grid((1, 8, 1), devices)
  assert mesh_lib.device_grid((8, 1, 1), jax.devices()) is None  # One host: plain mesh.
