"""Standard TFDS datasets, read through their own TFDS builders: what each one holds in our terms.

Each entry maps a dataset's features onto the host-batch keys with preprocessing ops
(mmjax/data/ops.py) that run before the config's own data.pp_train / data.pp_eval (`adapter`),
and names its modalities, splits and audio sample rate. Prepare a dataset once on a machine with
internet (`tfds build <name> --data_dir=DIR`, see the README), then point data.dir at DIR (a local
folder or a gs:// bucket).

A dataset that stores several captions per example (coco_captions) trains on one drawn per
example and epoch, and is evaluated on every caption (`every_caption`): the standard retrieval
protocol, e.g. COCO's Karpathy test split: 5,000 images and their ~25,000 captions.
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Standard:
  modalities: tuple  # Of ("image", "text", "audio").
  train_split: str
  eval_split: str
  splits: tuple  # Every split, so that their sizes can be read.
  adapter: str = ""  # Ops from the builder's features to ours (image / caption / audio / label).
  sample_rate: int = 0  # Of the stored audio.
  text_key: str = ""  # The stored text (flattened key), for learning a vocab.
  captions: str = ""  # The stored sequence of an example's several captions (every_caption).


DATASETS = {
    # Images with five captions each (a few have six or seven); one is drawn per example and
    # epoch in training, evaluation reads them all.
    "coco_captions": Standard(
        modalities=("image", "text"), train_split="train", eval_split="val",
        splits=("train", "val", "test", "restval"),
        adapter="choose(key='captions/text', out_key='caption')",
        text_key="captions/text", captions="captions"),
    # Read speech with its transcript.
    "librispeech": Standard(
        modalities=("text", "audio"), train_split="train_clean100", eval_split="dev_clean",
        splits=("train_clean100", "train_clean360", "train_other500", "dev_clean",
                "dev_other", "test_clean", "test_other"),
        adapter="rename(audio='speech', caption='text')", sample_rate=16000,
        text_key="text"),
    # One-second spoken commands, 12 classes.
    "speech_commands": Standard(
        modalities=("audio",), train_split="train", eval_split="validation",
        splits=("train", "validation", "test"), sample_rate=16000),
    "cifar10": Standard(
        modalities=("image",), train_split="train", eval_split="test", splits=("train", "test")),
    "imagenet2012": Standard(
        modalities=("image",), train_split="train", eval_split="validation",
        splits=("train", "validation")),
}


def every_caption(name, source):
  """`source` (a split's stored examples, by index) read as one row per caption where dataset
  `name` stores several per example (its `captions`), else `source` itself.

  Row r is its example with `captions` narrowed to that one caption (so the adapter's `choose`
  takes it), and with label and image_id the example's index unless it stores its own: an
  example without labels is its own class, so a caption's hits are its own image, and the rows
  of one image share its image_id. An example without captions keeps one row, which the
  adapter reports as a bad example."""
  known = DATASETS.get(name)
  return _CaptionRows(source, known.captions) if known and known.captions else source


class _CaptionRows:
  """A split's stored examples as rows (example, caption); see every_caption."""

  def __init__(self, source, key):
    self._source, self._key = source, key
    self._rows = [(i, j) for i in range(len(source)) for j in range(max(self._count(i), 1))]
    self._cached = (None, None)  # An example's rows come one after another: read it once.

  def _count(self, index):
    try:
      captions = self._source[index][self._key]
    except Exception:  # pylint: disable=broad-except  # The reader reports it at its row.
      return 1
    return len(next(iter(captions.values()), ()) if isinstance(captions, dict) else captions)

  def __len__(self):
    return len(self._rows)

  def __getitem__(self, row):
    index, j = self._rows[row]
    if self._cached[0] != index:
      self._cached = (index, self._source[index])
    example = dict(self._cached[1])
    captions = example[self._key]
    example[self._key] = ({k: v[j:j + 1] for k, v in captions.items()}
                          if isinstance(captions, dict) else captions[j:j + 1])
    return {"label": index, "image_id": index} | example
