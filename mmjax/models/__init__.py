"""Models by config.model.name: 'mmt' (pretraining, mmjax.models.mmt), 'classifier'
(fine-tuning, mmjax.models.classifier) and 'raw' (the raw-input baseline of fine-tuning tables,
mmjax.models.raw)."""
from mmjax.errors import UserError

NAMES = ("mmt", "classifier", "raw")
# The models whose output is {'classification': {'logits', 'labels'}}: what the classification
# objective and evaluator need.
CLASSIFIERS = ("classifier", "raw")


def make(config, info, *, rngs):
  """The model `config.name` names (config: a training config's `model`)."""
  # pylint: disable=g-import-not-at-top
  if config.name == "mmt":
    from mmjax.models import mmt
    return mmt.MultimodalTransformer(config, info, rngs=rngs)
  if config.name == "classifier":
    from mmjax.models import classifier
    return classifier.Classifier(config, info, rngs=rngs)
  if config.name == "raw":
    from mmjax.models import raw
    return raw.RawBaseline(config, info, rngs=rngs)
  raise UserError(f"config.model.name={config.name!r}: use one of {list(NAMES)}.")
