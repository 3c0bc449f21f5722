"""Fine-tuning: partial restore by name with an honest report, position-table resizing,
layer-wise learning-rate decay, linear probes. (The pretrain-on-8 / fine-tune-on-1 round trip
is in test_train.py, on its trained run.)"""
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mmjax.errors import UserError
from mmjax.train import init_from
from mmjax.train import optimizer

pytestmark = pytest.mark.slow  # End-to-end training: `-m 'not slow'` skips it.


def _save_state(directory, params):
  """A step directory laid out as mmjax.train.checkpoint writes it: <step>/state/{params,...}."""
  path = os.path.join(directory, "checkpoints", "7", "state")
  ocp.PyTreeCheckpointer().save(path, {"params": params, "step": np.int32(7)})
  return directory


def _abstract(tree):
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def test_partial_restore_reports_renamed_and_resized(tmp_path):
  rng = np.random.default_rng(0)
  saved = {"encoder": {"w": rng.normal(size=(4, 4)).astype(np.float32),
                       "pos_embed": np.full((2, 3, 4), 0.5, np.float32)},
           "decoder": {"w": rng.normal(size=(4, 2)).astype(np.float32)},
           "proj": {"kernel": rng.normal(size=(4, 3)).astype(np.float32)}}
  workdir = _save_state(str(tmp_path / "pretrain"), saved)
  # The fine-tuning model: 'proj' renamed to 'projection', a pos table for a larger grid, a head.
  fresh = {"encoder": {"w": jnp.zeros((4, 4)), "pos_embed": jnp.zeros((4, 6, 4))},
           "projection": {"kernel": jnp.ones((4, 3))},
           "head": {"kernel": jnp.full((4, 10), 2.0)}}
  params, report = init_from.restore(workdir, _abstract(fresh), fresh)
  assert report["loaded"] == ["encoder/w"]
  assert report["resized"] == ["encoder/pos_embed: [2, 3, 4] -> [4, 6, 4]"]
  assert report["new"] == ["head/kernel", "projection/kernel"]
  assert report["unused"] == ["decoder/w", "proj/kernel"]
  assert report["checkpoint"].endswith(os.path.join("checkpoints", "7"))
  np.testing.assert_array_equal(params["encoder"]["w"], saved["encoder"]["w"])
  np.testing.assert_allclose(params["encoder"]["pos_embed"], 0.5)  # Constant field resized.
  np.testing.assert_array_equal(params["projection"]["kernel"], 1.0)  # New: as initialized.
  np.testing.assert_array_equal(params["head"]["kernel"], 2.0)
  summary = init_from.summary(report)
  assert "1 parameters loaded, 1 resized, 2 new, 2 in the checkpoint but unused" in summary

  # A weight resized where no rule applies is an error naming it and both shapes.
  bad = dict(fresh, encoder={"w": jnp.zeros((4, 5)), "pos_embed": jnp.zeros((2, 3, 4))})
  with pytest.raises(UserError, match=r"encoder/w: checkpoint \[4, 4\], model \[4, 5\]"):
    init_from.restore(workdir, _abstract(bad), bad)
  with pytest.raises(UserError, match="holds no checkpoint"):
    init_from.step_dir(str(tmp_path))


@pytest.mark.parametrize("old,new", [((3, 8), (7, 8)), ((2, 2, 8), (4, 3, 8)),
                                     ((4, 4, 8), (2, 2, 8))])
def test_resize_keeps_a_constant_field_and_a_linear_ramp(old, new):
  table = jnp.full(old, -1.25)
  np.testing.assert_allclose(init_from.resize(table, new), -1.25, rtol=1e-6)
  # A ramp along the first grid axis stays monotone, with the same end points' range.
  ramp = jnp.broadcast_to(jnp.linspace(0.0, 1.0, old[0]).reshape((-1,) + (1,) * (len(old) - 1)),
                          old)
  out = np.asarray(init_from.resize(ramp, new))[:, ..., 0].reshape(new[0], -1)[:, 0]
  assert (np.diff(out) >= 0).all() and 0.0 <= out.min() and out.max() <= 1.0


def _opt_cfg(**overrides):
  cfg = ml_collections.ConfigDict(dict(lr=0.1, warmup_steps=0, min_lr_ratio=1.0,
                                       weight_decay=0.0, b1=0.9, b2=0.95, grad_clip=1e9,
                                       layer_decay=1.0, freeze=""))
  cfg.update(overrides)
  return cfg


def _params(depth):
  return {"tokenizers": {"image": {"kernel": jnp.zeros((2, 2))}},
          "encoder": {"blocks": {"blocks": {str(i): {"w": jnp.zeros((2, 2))}
                                            for i in range(depth)}},
                      "norm": {"scale": jnp.zeros((2,))}},
          "head": {"kernel": jnp.zeros((2, 3))}}


def test_layer_decay_gives_each_layer_its_learning_rate():
  depth, decay, lr = 3, 0.5, 0.1
  tx, _ = optimizer.make(_opt_cfg(lr=lr, layer_decay=decay), total_steps=10, depth=depth)
  params = _params(depth)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  # Adam's first step moves each weight by its learning rate (g / |g|).
  step = lambda x: float(-np.asarray(x).mean())
  np.testing.assert_allclose(step(updates["head"]["kernel"]), lr, rtol=1e-4)
  np.testing.assert_allclose(step(updates["encoder"]["norm"]["scale"]), lr, rtol=1e-4)
  for i in range(depth):  # Block i: lr * decay ** (depth - i).
    np.testing.assert_allclose(step(updates["encoder"]["blocks"]["blocks"][str(i)]["w"]),
                               lr * decay ** (depth - i), rtol=1e-4)
  np.testing.assert_allclose(step(updates["tokenizers"]["image"]["kernel"]),
                             lr * decay ** (depth + 1), rtol=1e-4)
  # Scanned blocks (stacked on a leading layer axis) get the same rates, row by row.
  stacked = {"encoder": {"blocks": {"blocks": {"w": jnp.zeros((depth, 2, 2))}}}}
  scales = optimizer.layer_scales(stacked, depth, decay)["encoder"]["blocks"]["blocks"]["w"]
  np.testing.assert_allclose(np.asarray(scales).ravel(), [decay ** 3, decay ** 2, decay])


def test_linear_probe_trains_only_the_head():
  tx, _ = optimizer.make(_opt_cfg(freeze="backbone"), total_steps=10, depth=3)
  params = _params(3)
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  moved = {k: bool(np.any(np.asarray(v))) for k, v in
           init_from._flatten(updates).items()}  # pylint: disable=protected-access
  assert moved.pop("head/kernel")
  assert not any(moved.values()), moved
  with pytest.raises(UserError, match="config.optimizer.freeze='encoder'"):
    optimizer.make(_opt_cfg(freeze="encoder"), total_steps=10, depth=3)



def test_linear_probe_state_places_on_a_mesh(runlocal_config):
  """A probe's optimizer state has no moments for frozen parameters (optax.MaskedNode): the
  train state still gets shardings and initializes on a mesh."""
  from configs import finetune_digits  # pylint: disable=g-import-not-at-top
  from mmjax.data import loader  # pylint: disable=g-import-not-at-top
  from mmjax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from mmjax.parallel import sharding  # pylint: disable=g-import-not-at-top
  from mmjax.train import trainer  # pylint: disable=g-import-not-at-top
  config = finetune_digits.get_config("task=image,mode=probe,runlocal")
  config.data.dir = runlocal_config.data.dir
  info = loader.prepare(config.data)
  tx, _ = optimizer.make(config.optimizer, config.total_steps, depth=4)
  _, abstract = trainer.abstract_model(config, info, tx)
  mesh = mesh_lib.make_mesh({"data": 8})
  shardings = sharding.param_shardings(
      abstract, mesh, sharding.rules_from_config(config.parallel.rules))
  state = trainer.initial_state(config, info, tx, shardings)
  moments = [x for x in jax.tree.leaves(state["opt_state"]) if x.ndim >= 2]
  head = [x for x in jax.tree.leaves(state["params"]) if x.ndim >= 2 and x.shape[-1] == 10]
  assert len(moments) == 2 * len(head) == 2  # Adam's mu and nu for the head kernel only.


def test_a_probe_backpropagates_to_the_head_alone(runlocal_config):
  """With a frozen backbone the encoder is a constant of the step: the head's gradient is the
  one full backpropagation gives, every other gradient is zero (and never computed)."""
  from configs import finetune_digits  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from mmjax import models  # pylint: disable=g-import-not-at-top
  from mmjax import objectives  # pylint: disable=g-import-not-at-top
  from mmjax.data import loader  # pylint: disable=g-import-not-at-top
  from mmjax.train import step  # pylint: disable=g-import-not-at-top
  config = finetune_digits.get_config("task=image,mode=probe,runlocal")
  config.data.dir = runlocal_config.data.dir
  info = loader.prepare(config.data)
  batch = next(loader.split_batches(config.data, info, "test", 8))
  batch = {k: v for k, v in batch.items() if k in ("image", "label")}
  graphdef, params = nnx.split(models.make(config.model, info, rngs=nnx.Rngs(0)), nnx.Param)
  # A nonzero head, so that the gradient reaching the encoder would be nonzero.
  params["head"]["kernel"].value = jnp.ones_like(params["head"]["kernel"].value) * 0.1

  def grads(freeze):
    config.optimizer.freeze = freeze
    g, _ = jax.jit(lambda p: step.grads_whole_batch(
        p, batch, jax.random.key(0), graphdef=graphdef, config=config,
        modalities=info.modalities, ctx=objectives.Context()))(params)
    return {init_from.param_names.name(k): v for k, v in jax.tree_util.tree_flatten_with_path(
        jax.device_get(g))[0]}

  probe, full = grads("backbone"), grads("")
  for name, g in probe.items():
    if name.split("/")[0] in ("head", "head_norm"):
      np.testing.assert_allclose(g, full[name], rtol=1e-5, atol=1e-7, err_msg=name)
    else:
      assert not np.any(g), name
      assert np.any(full[name]), name  # Full backpropagation does reach it.
