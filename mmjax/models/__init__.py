"""Models by config.model.name (mmjax.registry): 'mmt' (pretraining, mmjax.models.mmt),
'classifier' (fine-tuning, mmjax.models.classifier), 'raw' (the raw-input baseline of
fine-tuning tables, mmjax.models.raw), or one added with `register(name, cls)`. A model is a
class `Model(config.model, info, *, rngs)` (an nnx.Module; a module's `MODEL`); one whose
output is {'classification': {'logits', 'labels'}} (what the classification objective and
evaluator need) says so with a class attribute `classifies = True`."""
from mmjax import registry

MODELS = registry.Registry("model", __name__, "MODEL")
register, unregister, names = MODELS.register, MODELS.unregister, MODELS.names


def get(name):
  """The model class called `name` (config.model.name)."""
  return MODELS.get(name, key="config.model.name")


def classifies(name):
  """Whether model `name` outputs classification logits."""
  return getattr(get(name), "classifies", False)


def make(config, info, *, rngs):
  """The model `config.name` names (config: a training config's `model`)."""
  return get(config.name)(config, info, rngs=rngs)
