"""`mmjax_digits`: handwritten digits paired with a caption and a spoken digit word, built offline.

Every example pairs one of sklearn's 1797 8x8 handwritten digits with a templated caption ("the
number 7 written by hand") and the digit word spoken by espeak-ng. Nothing is downloaded.

Splits are made for testing generalisation in both modalities:
  train       70 % of the images, each `examples_per_image` times with a fresh caption and
              training voice setting;
  validation  10 % of the images (unseen), training voice settings;
  test        20 % of the images (unseen), voice settings training never hears: held-out voice
              variants at held-out speeds and pitches.
A voice setting is stored as a string such as "en-us+f2/s160/p50" (voice / words per minute /
pitch), next to the sklearn `image_id`, so both properties can be checked.
"""
import concurrent.futures
import dataclasses
import io
import itertools
import os

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
import tqdm

from mmjax.data import speech
from mmjax.errors import UserError

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
IMAGE_SHAPE = (8, 8, 1)

# {w}: the word ("seven"), {n}: the numeral ("7"); {a_w}/{a_n}: the same with "a"/"an".
CAPTION_TEMPLATES = (
    "a handwritten {w}",
    "the number {n} written by hand",
    "the digit {w}",
    "an image of the numeral {n}",
    "{a_w} drawn by hand",
    "a small grayscale picture of the number {w}",
    "a scanned handwritten digit {n}",
    "someone wrote the digit {w}",
    "a low resolution image of {a_n}",
    "the numeral {w} in handwriting",
    "a pixelated {n}",
    "this is {a_w}",
    "a photo of a handwritten {n}",
    "the figure {w}, written with a pen",
)

# Voice settings: accents are shared by all splits; variants, speeds and pitches are disjoint
# between training (train, validation) and test, so test speech is never heard in training.
LANGUAGES = ("en-us", "en-us-nyc", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan",
             "en-029")
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "f4")
TEST_VARIANTS = ("m7", "f5")
TRAIN_SPEEDS = (125, 145, 165, 185)
TEST_SPEEDS = (135, 175)
TRAIN_PITCHES = (25, 40, 55, 70)
TEST_PITCHES = (33, 63)
# Pool sizes bound the distinct utterances to synthesize: 10 words x (48 + 16) = 640 at most.
NUM_TRAIN_VOICES = 48
NUM_TEST_VOICES = 16

SPLIT_FRACTIONS = {"train": 0.7, "validation": 0.1, "test": 0.2}
_SEED = 1797  # Fixes the image partition, voice pools and per-example draws.
_MIN_IMAGES = 20


@dataclasses.dataclass
class DigitsConfig(tfds.core.BuilderConfig):
  """What to build; use `make_config`, which derives the name from the fields."""
  sample_rate: int = 8000
  max_images: int = 0  # 0: all 1797 images.
  examples_per_image: int = 3  # Train split only.


def config_name(sample_rate, max_images, examples_per_image):
  """E.g. "sr8000_all_e3": distinct settings are distinct TFDS configs, never overwriting."""
  images = "all" if max_images == 0 else f"n{max_images}"
  return f"sr{sample_rate}_{images}_e{examples_per_image}"


def make_config(sample_rate=8000, max_images=0, examples_per_image=3):
  """Returns the DigitsConfig for these settings (the registered one for the defaults)."""
  if sample_rate <= 0:
    raise UserError(f"data.sample_rate must be positive, got {sample_rate}.")
  if max_images < 0 or 0 < max_images < _MIN_IMAGES:
    raise UserError(f"data.max_images must be 0 (all 1797 images) or at least {_MIN_IMAGES} "
                    f"so that every split gets images, got {max_images}.")
  if examples_per_image < 1:
    raise UserError(f"data.examples_per_image must be >= 1, got {examples_per_image}.")
  name = config_name(sample_rate, max_images, examples_per_image)
  for registered in MmjaxDigits.BUILDER_CONFIGS:
    # TFDS rejects a new config object that reuses a registered config's name.
    if registered.name == name:
      return registered
  return DigitsConfig(
      name=name, sample_rate=sample_rate, max_images=max_images,
      examples_per_image=examples_per_image,
      description=f"{sample_rate} Hz speech, {max_images or 'all'} images, "
                  f"{examples_per_image} train examples per image.")


def require_build_tools():
  """Raises UserError unless espeak-ng, which building needs, is installed."""
  speech.require_espeak()


_BUILDERS = {}


def make_builder(data_cfg):
  """The TFDS builder for `data_cfg` (a loader config), reading/writing under data_cfg.dir."""
  config = make_config(data_cfg.sample_rate, data_cfg.max_images, data_cfg.examples_per_image)
  key = (config.name, os.path.abspath(data_cfg.dir))
  builder = _BUILDERS.get(key)
  # Reused once built: TFDS logs a warning each time it constructs a non-default config, and
  # evaluators ask for the builder at every evaluation. Only one made once the data was there:
  # one made before reads no splits, even when another process has built it since.
  if builder is None or not builder.is_prepared():
    builder = MmjaxDigits(config=config, data_dir=data_cfg.dir, file_format="array_record")
    if builder.is_prepared():
      _BUILDERS[key] = builder
  return builder


def voice_string(language, variant, speed, pitch):
  return f"{language}+{variant}/s{speed}/p{pitch}"


def parse_voice(voice):
  """"en-us+f2/s160/p50" -> ("en-us+f2", 160, 50)."""
  name, speed, pitch = voice.split("/")
  return name, int(speed[1:]), int(pitch[1:])


def voice_pools():
  """Returns (train, test) tuples of voice strings; disjoint by construction."""
  rng = np.random.default_rng([_SEED, 1])

  def pool(variants, speeds, pitches, n):
    combos = list(itertools.product(LANGUAGES, variants, speeds, pitches))
    pick = rng.choice(len(combos), size=n, replace=False)
    return tuple(voice_string(*combos[i]) for i in sorted(pick))

  return (pool(TRAIN_VARIANTS, TRAIN_SPEEDS, TRAIN_PITCHES, NUM_TRAIN_VOICES),
          pool(TEST_VARIANTS, TEST_SPEEDS, TEST_PITCHES, NUM_TEST_VOICES))


def partition_images(num_images, max_images=0):
  """Returns {split: int[N] image ids}: one fixed shuffle, then ~70/10/20 % cuts."""
  ids = np.random.default_rng([_SEED, 0]).permutation(num_images)
  if max_images:
    ids = ids[:max_images]
  n_train = round(len(ids) * SPLIT_FRACTIONS["train"])
  n_val = round(len(ids) * SPLIT_FRACTIONS["validation"])
  return {"train": np.sort(ids[:n_train]),
          "validation": np.sort(ids[n_train:n_train + n_val]),
          "test": np.sort(ids[n_train + n_val:])}


def caption(template, label):
  word, numeral = WORDS[label], str(label)
  # "an eight", "an 8"; every other digit takes "a".
  article = "an" if label == 8 else "a"
  return template.format(w=word, n=numeral, a_w=f"{article} {word}", a_n=f"{article} {numeral}")


def plan_examples(split, image_ids, labels, examples_per_image):
  """Returns [(key, image_id, caption, voice)] for a split; each draw depends only on the id."""
  train_voices, test_voices = voice_pools()
  voices = test_voices if split == "test" else train_voices
  reps = examples_per_image if split == "train" else 1
  examples = []
  for image_id in image_ids:
    rng = np.random.default_rng([_SEED, 2, int(image_id)])
    # Without replacement, so the repeats of an image differ (while the pools last).
    templates = rng.choice(len(CAPTION_TEMPLATES), size=reps,
                           replace=reps > len(CAPTION_TEMPLATES))
    picks = rng.choice(len(voices), size=reps, replace=reps > len(voices))
    for r in range(reps):
      examples.append((f"{image_id}_{r}", int(image_id),
                       caption(CAPTION_TEMPLATES[templates[r]], int(labels[image_id])),
                       voices[picks[r]]))
  return examples


def synthesize_all(utterances, sample_rate):
  """Returns {(word, voice): int16[T]}, synthesizing each distinct utterance once, in parallel."""
  utterances = sorted(set(utterances))

  def run(utterance):
    word, voice = utterance
    name, speed, pitch = parse_voice(voice)
    return speech.synthesize(word, voice=name, speed=speed, pitch=pitch,
                             sample_rate=sample_rate)

  # Threads suffice: each call waits on an espeak-ng subprocess, which releases the GIL.
  with concurrent.futures.ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 1)) as pool:
    audio = list(tqdm.tqdm(pool.map(run, utterances), total=len(utterances),
                           desc="Synthesizing speech (espeak-ng)", unit="utt"))
  return dict(zip(utterances, audio))


def load_images():
  """Returns (uint8[1797,8,8,1] images, int[1797] labels) from sklearn's bundled digits."""
  from sklearn import datasets  # Slow import, only needed while building.
  digits = datasets.load_digits()
  # Pixel values are counts 0..16 of set pixels in 4x4 blocks; stretch to the uint8 range.
  images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
  return images, digits.target


def _png(image):
  """PNG bytes of a uint8[H,W,1] image, encoded with PIL so building needs no TensorFlow."""
  from PIL import Image
  buf = io.BytesIO()
  Image.fromarray(image[..., 0], mode="L").save(buf, format="PNG")
  return buf.getvalue()


class MmjaxDigits(tfds.core.GeneratorBasedBuilder):
  """Handwritten digits with captions and spoken digit words (espeak-ng), built offline."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [DigitsConfig(name=config_name(8000, 0, 3),
                                  description="The default: 8 kHz, all images, 3 per image.")]
  DEFAULT_CONFIG_NAME = config_name(8000, 0, 3)
  # TFDS 4.9.10 finds a builder's source through a module that its package no longer declares
  # as a dependency on Python >= 3.9 (tensorflow/datasets#11212); saying where it is skips that.
  code_path = epath.Path(__file__)

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            # Decoded with PIL on read: the read path needs no TensorFlow.
            "image": tfds.features.Image(shape=IMAGE_SHAPE),
            "caption": tfds.features.Text(),
            # Raw bytes, not an int64 list: negative int16 samples would cost 10 bytes each.
            "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16,
                                          encoding=tfds.features.Encoding.BYTES),
            "label": tfds.features.ClassLabel(names=WORDS),
            "image_id": tfds.features.Scalar(dtype=np.int32),
            "voice": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage="https://scikit-learn.org/stable/modules/generated/"
                 "sklearn.datasets.load_digits.html",
        metadata=tfds.core.MetadataDict(sample_rate=self.builder_config.sample_rate),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    cfg = self.builder_config
    speech.require_espeak()
    images, labels = load_images()
    parts = partition_images(len(images), cfg.max_images)
    plans = {split: plan_examples(split, ids, labels, cfg.examples_per_image)
             for split, ids in parts.items()}
    audio = synthesize_all(
        [(WORDS[labels[image_id]], voice)
         for plan in plans.values() for _, image_id, _, voice in plan], cfg.sample_rate)
    return {split: self._generate_examples(plan, images, labels, audio)
            for split, plan in plans.items()}

  def _generate_examples(self, plan, images, labels, audio):
    for key, image_id, text, voice in plan:
      label = int(labels[image_id])
      yield key, {
          "image": _png(images[image_id]),
          "caption": text,
          "audio": audio[(WORDS[label], voice)],
          "label": label,
          "image_id": image_id,
          "voice": voice,
      }
