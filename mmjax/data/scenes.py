"""`mmjax_scenes`: rendered scenes of coloured shapes, each with a caption from a grammar and a
different spoken description (espeak-ng), built offline from a seed. The ablations' benchmark.

A scene holds 2 to 4 objects on a noisy grey background, anywhere that they do not overlap:
one main object (large or medium) and small distractors, each of a size drawn around its
class. Every object has a shape (4) and a colour (6). The scene's labels are the main object's
shape, colour, size and position (the cell of a 3 x 3 grid its centre is in, 9) and the number
of objects (3): five attributes, each a ClassLabel, any of which a probe or fine-tune reads as
its label (data.label_key). Positions are continuous, so no pixel template fits a shape.

The caption and the speech each describe a random subset of the attributes: the main object
with some of its colour / size / shape, and some of its position, its relation to one
distractor ("above a small blue square") and the number of objects; never all of them, and
captions are at least MIN_CAPTION_WORDS words, so a 15 % word mask hides at least one. The
speech draws its own subset, so audio<->text pairs carry more than a class.

Splits test generalisation, not memory:
  train / validation   scenes whose objects avoid the HELD_OUT (shape, colour) pairs;
                       captions from TRAIN_FRAMES; training voices (mmjax.data.digits' pools);
  test                 new scenes of the same pairs; captions from TEST_FRAMES, which training
                       never reads; voices training never hears;
  test_novel           as test, but every main object is a held-out pair: a representation
                       that reads colour in place of shape falls below chance here.
Sizes: 8,000 / 1,000 / 1,000 / 1,000 scenes (data.max_images > 0 builds a smaller slice, its own
config). Every draw depends only on the seed and the scene's index.
"""
import io
import typing

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from mmjax.data import digits
from mmjax.data import speech
from mmjax.errors import UserError

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (220, 40, 40), "green": (40, 175, 60), "blue": (50, 80, 235),
           "yellow": (230, 210, 40), "magenta": (205, 60, 205), "cyan": (50, 200, 215)}
SIZES = ("large", "medium")  # Of the main object; distractors are small.
POSITIONS = ("top left", "top", "top right", "left", "centre", "right",
             "bottom left", "bottom", "bottom right")
COUNTS = ("two", "three", "four")  # Objects in the scene.
ATTRIBUTES = {"shape": SHAPES, "colour": tuple(COLOURS), "size": SIZES,
              "position": POSITIONS, "count": COUNTS}
# (shape, colour) pairs no train or validation object has; every test scene's main object has one.
HELD_OUT = (("circle", "red"), ("square", "green"), ("triangle", "blue"), ("cross", "yellow"),
            ("triangle", "magenta"), ("cross", "cyan"))

IMAGE_SIZE = 32
_SUPERSAMPLE = 4  # Drawn at 128 px, then downsampled: antialiased edges.
# In output pixels, drawn +-10 %: the main object dominates the scene (half its width when
# large), so its attributes are the scene's most visible ones; distractors stay recognizable.
_RADIUS = {"large": 8.0, "medium": 6.0, "small": 2.8}
SPLIT_SIZES = {"train": 8000, "validation": 1000, "test": 1000, "test_novel": 1000}
HELD_OUT_SPLITS = ("test", "test_novel")  # Test frames and voices.
_SEED = 2357
MIN_CAPTION_WORDS = 8

# Caption frames: {d} is the description. Test captions use frames training never reads.
TRAIN_FRAMES = ("there is {d}", "this picture shows {d}", "a scene with {d}",
                "you can see {d}", "an image of {d}", "in this drawing we find {d}")
TEST_FRAMES = ("somebody painted {d}", "the focus here is {d}")
_POSITION_PHRASES = {
    "top left": "in the top left corner", "top": "at the top", "top right": "in the top right",
    "left": "on the left side", "centre": "in the middle", "right": "on the right side",
    "bottom left": "in the bottom left", "bottom": "at the bottom",
    "bottom right": "in the bottom right corner"}
_SIZE_WORDS = {"large": ("large", "big"), "medium": ("medium sized", "mid sized"),
               "small": ("small", "little")}
_NOUNS = ("object", "shape", "thing")


class Obj(typing.NamedTuple):
  shape: str
  colour: str
  size: str
  x: float  # Centre, in output pixels.
  y: float
  radius: float

  @property
  def cell(self):
    """The index into POSITIONS of the 3 x 3 cell the centre is in."""
    third = IMAGE_SIZE / 3
    return min(int(self.y // third), 2) * 3 + min(int(self.x // third), 2)


class Scene(typing.NamedTuple):
  objects: list  # Obj; objects[0] is the main one.
  background: int

  @property
  def labels(self):
    main = self.objects[0]
    return {"shape": SHAPES.index(main.shape), "colour": list(COLOURS).index(main.colour),
            "size": SIZES.index(main.size), "position": main.cell,
            "count": len(self.objects) - 2}


def make_scene(rng, held_out):
  """A random scene; its main object's (shape, colour) is held out iff `held_out`, and no other
  object's is. Objects are placed at random where they overlap nothing (redrawn until so)."""
  pairs = [(s, c) for s in SHAPES for c in COLOURS]
  seen = [p for p in pairs if p not in HELD_OUT]
  main = HELD_OUT[rng.integers(len(HELD_OUT))] if held_out else seen[rng.integers(len(seen))]
  kinds = [(*main, SIZES[rng.integers(2)])]
  kinds += [(*seen[rng.integers(len(seen))], "small") for _ in range(rng.integers(1, 4))]
  while True:
    objects = []
    for shape, colour, size in kinds:
      r = _RADIUS[size] * rng.uniform(0.9, 1.1)
      x, y = rng.uniform(r + 0.5, IMAGE_SIZE - r - 0.5, 2)
      objects.append(Obj(shape, colour, size, float(x), float(y), float(r)))
    if all(np.hypot(a.x - b.x, a.y - b.y) > a.radius + b.radius + 1
           for i, a in enumerate(objects) for b in objects[:i]):
      return Scene(objects, background=int(rng.integers(30, 90)))


def render(scene, rng):
  """uint8[32, 32, 3]: the objects drawn antialiased on the background, plus pixel noise."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  s = _SUPERSAMPLE
  canvas = Image.new("RGB", (IMAGE_SIZE * s,) * 2, (scene.background,) * 3)
  draw = ImageDraw.Draw(canvas)
  for shape, colour, _, x, y, radius in scene.objects:
    cx, cy, r = x * s, y * s, radius * s
    fill = tuple(int(np.clip(v + rng.integers(-15, 16), 0, 255)) for v in COLOURS[colour])
    if shape == "circle":
      draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
      h = r * 0.85
      draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "triangle":
      draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fill)
    else:  # cross
      w = r * 0.35
      draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
      draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
  image = np.asarray(canvas.resize((IMAGE_SIZE,) * 2, Image.Resampling.BOX), np.float32)
  image += rng.normal(0, 6, image.shape)
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _noun_phrase(obj, rng, p_colour, p_size, p_shape):
  """'a big red circle' / 'a red shape' / 'a circle': some of the object's attributes."""
  shape, colour, size = obj[:3]
  words = []
  if rng.random() < p_size:
    words.append(_SIZE_WORDS[size][rng.integers(2)])
  if rng.random() < p_colour:
    words.append(colour)
  words.append(shape if rng.random() < p_shape else _NOUNS[rng.integers(len(_NOUNS))])
  article = "an" if words[0][0] in "aeiou" else "a"
  return f"{article} {' '.join(words)}", len(words) - 1 + (words[-1] in SHAPES)


def _relation(main, other):
  """How `main` lies relative to `other`, along the axis where they are further apart."""
  dx, dy = main.x - other.x, main.y - other.y
  if abs(dy) > abs(dx):
    return "above" if dy < 0 else "below"
  return "to the left of" if dx < 0 else "to the right of"


def describe(scene, rng, *, spoken=False):
  """A description of a random subset of the scene's attributes (never all of them). Spoken
  ones are short: the main object and at most one of its position, a relation, the count."""
  main = scene.objects[0]
  others = scene.objects[1:]
  while True:
    if spoken:
      np_, named = _noun_phrase(main, rng, 0.6, 0.4, 0.7)
      extra = rng.choice(4, p=(0.2, 0.35, 0.3, 0.15))
      use = {k: extra == i for i, k in enumerate(("position", "relation", "count"), 1)}
    else:
      np_, named = _noun_phrase(main, rng, 0.7, 0.5, 0.8)
      use = {"position": rng.random() < 0.5, "relation": rng.random() < 0.6,
             "count": rng.random() < 0.4}
      if named + sum(use.values()) >= 6:  # Everything would be named: drop one extra.
        use[list(use)[rng.integers(3)]] = False
    parts = [np_]
    if use["position"]:
      position = POSITIONS[main.cell]
      parts.append(position if spoken else _POSITION_PHRASES[position])
    if use["relation"]:
      other = others[rng.integers(len(others))]
      other_np, _ = _noun_phrase(other, rng, 0.7, 0.3, 0.8)
      parts.append(f"{_relation(main, other)} {other_np}")
    if use["count"]:
      n = len(others)
      parts.append(rng.choice([f"among {COUNTS[n - 1]} objects",
                               f"with {('one', 'two', 'three')[n - 1]} other "
                               f"{'shape' if n == 1 else 'shapes'}"]))
    text = " ".join(parts)
    if spoken or len(text.split()) + 3 >= MIN_CAPTION_WORDS:
      return text


def caption(scene, rng, frames):
  while True:
    text = frames[rng.integers(len(frames))].format(d=describe(scene, rng))
    if len(text.split()) >= MIN_CAPTION_WORDS:
      return text


def plan(split, n):
  """[(key, scene, caption, spoken text, voice, image seed)] of a split, index by index."""
  train_voices, test_voices = digits.voice_pools()
  test = split in HELD_OUT_SPLITS
  voices = test_voices if test else train_voices
  frames = TEST_FRAMES if test else TRAIN_FRAMES
  out = []
  for i in range(n):
    rng = np.random.default_rng([_SEED, list(SPLIT_SIZES).index(split), i])
    scene = make_scene(rng, held_out=split == "test_novel")
    out.append((f"{split}_{i}", scene, caption(scene, rng, frames),
                describe(scene, rng, spoken=True), voices[rng.integers(len(voices))],
                int(rng.integers(2**31))))
  return out


def split_sizes(max_images=0):
  """{split: scenes}: SPLIT_SIZES, or a slice of about max_images scenes in the same ratio."""
  if not max_images:
    return dict(SPLIT_SIZES)
  total = sum(SPLIT_SIZES.values())
  return {s: max(10, round(n * max_images / total)) for s, n in SPLIT_SIZES.items()}


class ScenesConfig(tfds.core.BuilderConfig):
  def __init__(self, *, sample_rate=8000, max_images=0, **kwargs):
    super().__init__(**kwargs)
    self.sample_rate, self.max_images = sample_rate, max_images


def make_config(sample_rate=8000, max_images=0):
  if sample_rate <= 0:
    raise UserError(f"data.sample_rate must be positive, got {sample_rate}.")
  if max_images < 0 or 0 < max_images < 30:
    raise UserError(f"data.max_images={max_images}: 0 (all {sum(SPLIT_SIZES.values())} scenes) "
                    "or at least 30, so that every split gets scenes.")
  name = f"sr{sample_rate}_{'all' if not max_images else f'n{max_images}'}"
  for registered in MmjaxScenes.BUILDER_CONFIGS:
    if registered.name == name:
      return registered
  return ScenesConfig(name=name, sample_rate=sample_rate, max_images=max_images,
                      description=f"{sample_rate} Hz speech, {max_images or 'all'} scenes.")


def require_build_tools():
  speech.require_espeak()


_BUILDERS = {}


def make_builder(data_cfg):
  """The TFDS builder for `data_cfg` (data.sample_rate, data.max_images), under data_cfg.dir."""
  config = make_config(data_cfg.sample_rate, data_cfg.max_images)
  key = (config.name, str(data_cfg.dir))
  builder = _BUILDERS.get(key)
  if builder is None or not builder.is_prepared():  # As mmjax.data.digits.make_builder.
    builder = MmjaxScenes(config=config, data_dir=data_cfg.dir, file_format="array_record")
    if builder.is_prepared():
      _BUILDERS[key] = builder
  return builder


def _png(image):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(image, mode="RGB").save(buf, format="PNG")
  return buf.getvalue()


class MmjaxScenes(tfds.core.GeneratorBasedBuilder):
  """Scenes of coloured shapes with captions and spoken descriptions, built offline."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [ScenesConfig(name="sr8000_all", description="The default: 8 kHz, all.")]
  DEFAULT_CONFIG_NAME = "sr8000_all"
  code_path = epath.Path(__file__)  # As mmjax.data.digits (tensorflow/datasets#11212).

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)),
            "caption": tfds.features.Text(),
            "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16,
                                          encoding=tfds.features.Encoding.BYTES),
            "spoken": tfds.features.Text(),  # What the audio says.
            "voice": tfds.features.Text(),
            "image_id": tfds.features.Scalar(dtype=np.int32),
            **{name: tfds.features.ClassLabel(names=values)
               for name, values in ATTRIBUTES.items()},
        }),
        metadata=tfds.core.MetadataDict(sample_rate=self.builder_config.sample_rate),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    cfg = self.builder_config
    speech.require_espeak()
    plans = {split: plan(split, n) for split, n in split_sizes(cfg.max_images).items()}
    audio = digits.synthesize_all(
        [(spoken, voice) for p in plans.values() for _, _, _, spoken, voice, _ in p],
        cfg.sample_rate)
    return {split: self._generate_examples(p, audio, i * 10**6)
            for i, (split, p) in enumerate(plans.items())}

  def _generate_examples(self, split_plan, audio, offset):
    for i, (key, scene, text, spoken, voice, image_seed) in enumerate(split_plan):
      yield key, {
          "image": _png(render(scene, np.random.default_rng(image_seed))),
          "caption": text, "audio": audio[(spoken, voice)], "spoken": spoken, "voice": voice,
          "image_id": offset + i, **scene.labels}
