"""Zero-shot classification (CLIP-style) with a pretrained multimodal model: each class is the
mean text embedding of its name put into prompt templates; an image or a sound is assigned the
class whose text embedding is nearest (cosine). No training on labels.

cfg: split, batch_size, templates (strings with one '{}' for the class name, or the path of a
prompt file: one template per line, '#' comments; configs/prompts/clip_imagenet.txt holds
CLIP's 80 ImageNet templates), attribute (a
stored class-label feature to classify, e.g. mmjax_scenes' 'shape'; default: data.label_key),
class_names (default: that feature's names), inputs (modalities to classify; default: every non-text
modality of the dataset). The prompts are text: this evaluator needs the text modality.
"""
import os

import jax
import ml_collections
import numpy as np
from flax import nnx

from mmjax import modality as modality_lib
from mmjax.data import sources
from mmjax.errors import NotApplicable
from mmjax.errors import UserError
from mmjax.evaluate import retrieval
from mmjax.parallel import mesh as mesh_lib


PROMPTS = "text"  # The modality of the class prompts.


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_templates(templates, where):
  """The prompt templates: `templates` itself (strings), or the lines of the prompt file it
  names (relative to the working directory or to the repository), '#' comments and blank
  lines left out. UserError unless each has exactly one '{}'."""
  if isinstance(templates, str):
    path = templates if os.path.isfile(templates) else os.path.join(REPO, templates)
    if not os.path.isfile(path):
      raise UserError(f"{where}={templates!r}: no such prompt file (one template per line).")
    with open(path, encoding="utf-8") as f:
      lines = [(i, line.strip()) for i, line in enumerate(f, 1)]
    templates = [t for _, t in lines if t and not t.startswith("#")]
    bad = [f"line {i}: {t!r}" for i, t in lines if t and not t.startswith("#")
           and t.count("{}") != 1]
  else:
    templates = list(templates or ())
    bad = [repr(t) for t in templates if t.count("{}") != 1]
  if not templates or bad:
    raise UserError(f"{where}: templates must have exactly one '{{}}' for the class name"
                    + (f"; not {', '.join(bad)}." if bad else ", and there are none."))
  return tuple(templates)


class Evaluator:
  """Accuracy per input modality against the class prompts (metrics eval/<name>/<m>/accuracy)."""

  def __init__(self, cfg, *, name, config, info, mesh):
    self.cfg, self.name, self.info, self.mesh = cfg, name, info, mesh
    own = info.evaluated()
    class_names = info.class_names
    attribute = cfg.get("attribute", "")
    if attribute and attribute != config.data.label_key:  # Read that feature as the label.
      config = ml_collections.ConfigDict(config.to_dict())
      config.data.label_key = attribute
      class_names = self._feature_names(config.data, f"config.evals.{name}.attribute")
    self.class_names = tuple(cfg.get("class_names") or class_names)
    self.inputs = tuple(cfg.get("inputs") or [m for m in own if m != PROMPTS])
    where = f"config.evals.{name} (zero_shot)"
    if PROMPTS not in info.modalities:
      raise NotApplicable(f"{where} needs a model with text: dataset {info.name!r} has "
                      f"{list(info.modalities)}.")
    if not self.class_names:
      raise NotApplicable(f"{where}: dataset {info.name!r} has no class names (no labels); "
                          f"set config.evals.{name}.class_names if it has classes.")
    self.templates = read_templates(cfg.templates, f"config.evals.{name}.templates")
    missing = [m for m in self.inputs if m not in own or m == PROMPTS]
    if missing or not self.inputs:
      raise UserError(f"{where}: inputs {list(self.inputs)} must be non-text modalities of "
                      f"{info.name!r} ({list(own)}).")
    self._split = retrieval.Evaluator(cfg, name=name, config=config, info=info, mesh=mesh)
    prompts = [t.format(c) for c in self.class_names for t in self.templates]
    self._prompts = modality_lib.get(PROMPTS).encode(info, prompts)

  @staticmethod
  def _feature_names(data_cfg, where):
    """The class names of the stored class-label feature data_cfg.label_key."""
    _, builder = sources.builder(data_cfg)
    features = builder.info.features
    feature = features[data_cfg.label_key] if data_cfg.label_key in features else None
    if not hasattr(feature, "names"):
      labels = sorted(k for k, f in builder.info.features.items() if hasattr(f, "names"))
      raise UserError(f"{where}={data_cfg.label_key!r}: {data_cfg.name} has no class-label "
                      f"feature of that name; it has {labels}.")
    return tuple(feature.names)

  def class_embeddings(self, model):
    """f32[classes, E]: the normalized mean embedding of each class's prompts."""
    graphdef, state = nnx.split(model)
    embed = jax.jit(lambda s, b: nnx.merge(graphdef, s).embed(b)[PROMPTS],
                    out_shardings=mesh_lib.replicated(self.mesh))
    z = np.asarray(jax.device_get(embed(state, self._prompts)))
    z = z.reshape(len(self.class_names), len(self.templates), -1).mean(1)
    return z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)

  def run(self, model, step, writer):
    del step, writer
    classes = self.class_embeddings(model)
    embeddings, labels, has = self._split.embed_split(model)
    metrics = {}
    for m in self.inputs:
      predicted = (embeddings[m][has[m]] @ classes.T).argmax(-1)
      metrics[f"eval/{self.name}/{m}/accuracy"] = float((predicted == labels[has[m]]).mean())
    return metrics
