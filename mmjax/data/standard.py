"""Standard TFDS datasets, read through their own TFDS builders: what each one holds in our terms.

Each entry maps a dataset's features onto the host-batch keys with preprocessing ops
(mmjax/data/ops.py) that run before the config's own data.pp_train / data.pp_eval (`adapter`),
and names its modalities, splits and audio sample rate. Prepare a dataset once on a machine with
internet (`tfds build <name> --data_dir=DIR`, see the README), then point data.dir at DIR (a local
folder or a gs:// bucket).
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


DATASETS = {
    # Images with five captions each; one is drawn per example and epoch.
    "coco_captions": Standard(
        modalities=("image", "text"), train_split="train", eval_split="val",
        splits=("train", "val", "test", "restval"),
        adapter="choose(key='captions/text', out_key='caption')",
        text_key="captions/text"),
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
