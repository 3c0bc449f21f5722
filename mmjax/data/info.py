"""What models and evaluators know about a prepared dataset: DatasetInfo, and the shapes of
its host batches."""
import dataclasses

from mmjax import modality as modality_lib


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """A prepared dataset's modalities, static shapes, vocab, classes and splits.

  With a data.mixture whose entries differ in modalities, `modalities` is their union (what
  the model and batches have), and the other two say what each part really has; () means all
  of `modalities`. Batches flag the rest: has_<modality> False, zeros in its keys.
  """
  name: str
  modalities: tuple  # Canonical order (mmjax.modality.ordered).
  shapes: dict  # Host-batch key -> per-example shape, of every modality's keys.
  vocab_size: int = 0  # Tokens in vocab_file (a learned vocab can be smaller than asked for).
  vocab_file: str = ""
  sample_rate: int = 0  # Hz of the audio batches.
  num_classes: int = 0
  class_names: tuple = ()
  split_sizes: dict = dataclasses.field(default_factory=dict)  # Split -> number of examples.
  mixture_modalities: tuple = ()  # Per data.mixture entry, in order (training).
  eval_modalities: tuple = ()  # The data config's own dataset (what evaluators read).

  def evaluated(self):
    """The modalities of the dataset evaluators read."""
    return self.eval_modalities or self.modalities

  def size(self, modality):
    """`modality`'s size here (image: (H, W, C); text: tokens; audio: samples)."""
    return modality_lib.get(modality).size(self)


def planned(sizes, name="planned", **fields):
  """A DatasetInfo with these static shapes and no data behind it: `sizes` {modality: size}
  as Modality.example_shapes takes it. `fields` set the rest (vocab_size, sample_rate, ...)."""
  shapes = {}
  for m, size in sizes.items():
    shapes |= modality_lib.get(m).example_shapes(size)
  fields = dict(num_classes=1, class_names=("none",)) | fields
  return DatasetInfo(name=name, modalities=modality_lib.ordered(sizes), shapes=shapes, **fields)


def batch_shapes(info):
  """{host-batch key: per-example shape} of a prepared dataset, in canonical order."""
  return {k: tuple(info.shapes[k]) for k in modality_lib.batch_keys(info.modalities)}


def batch_dtypes(modalities):
  """{host-batch key: numpy dtype} of `modalities`."""
  return {k: dt for m in modality_lib.ordered(modalities)
          for k, dt in modality_lib.get(m).dtypes.items()}


def presence_needed(info):
  """Whether batches carry has_<modality> flags: only when some part of the data (a mixture
  entry, or the evaluated dataset) lacks one of info.modalities. Without flags the model takes
  every example to have every modality, and the losses skip the masking (and, on a multi-host
  CPU run, the extra collectives that gloo can deadlock on)."""
  parts = tuple(info.mixture_modalities) + (info.eval_modalities,)
  return any(mods and set(mods) != set(info.modalities) for mods in parts)
