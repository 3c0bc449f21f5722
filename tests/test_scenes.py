"""The scenes benchmark (mmjax_scenes): what its splits hold out, that its captions and speech
tell the truth about the scene, what the renderer draws, and a small slice built and read
per attribute, pretrained on and probed end to end."""
import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from mmjax.data import scenes

WORDS = {"colour": set(scenes.COLOURS), "shape": set(scenes.SHAPES)}


@pytest.fixture(scope="module")
def plans():
  return {split: scenes.plan(split, 400) for split in scenes.SPLIT_SIZES}


def test_the_test_split_holds_out_pairs_frames_and_voices(plans):
  seen_pairs = {o[:2] for split in ("train", "validation") for _, scene, *_ in plans[split]
                for o in scene.objects}
  assert not seen_pairs & set(scenes.HELD_OUT)
  novel = {scene.objects[0][:2] for _, scene, *_ in plans["test_novel"]}
  assert novel == set(scenes.HELD_OUT)  # Each held-out pair is tested there, nothing else;
  assert not {o[:2] for _, s, *_ in plans["test"] for o in s.objects} & novel  # not in test.
  for split, frames in (("train", scenes.TRAIN_FRAMES), ("test", scenes.TEST_FRAMES),
                        ("test_novel", scenes.TEST_FRAMES)):
    prefixes = tuple(f.split("{d}")[0] for f in frames)
    assert all(caption.startswith(prefixes) for _, _, caption, *_ in plans[split])
  voices = {split: {voice for *_, voice, _ in plans[split]} for split in plans}
  assert not (voices["test"] | voices["test_novel"]) & (voices["train"] | voices["validation"])
  assert scenes.plan("test", 50) == scenes.plan("test", 50)[:50]  # Drawn from the seed alone.


def _named(text, scene):
  """What a description claims, checked against the scene: returns the attributes it names."""
  main, others = scene.objects[0], scene.objects[1:]
  named = set()
  spoken = re.search(r"(?:^| )((?:top|bottom) (?:left|right)|top|bottom|left|right|centre)$",
                     text)
  for position, phrase in scenes._POSITION_PHRASES.items():  # pylint: disable=protected-access
    if phrase in text or (spoken and spoken[1] == position):
      assert scenes.POSITIONS.index(position) == main.cell, (text, scene.objects)
      named.add("position")
  count = re.search(r"among (\w+) objects|with (\w+) other shapes?", text)
  if count:
    n = (scenes.COUNTS.index(count[1]) + 2 if count[1]
         else ("one", "two", "three").index(count[2]) + 2)
    assert n == len(scene.objects), (text, scene.objects)
    named.add("count")
  relation = re.search(r"(above|below|to the left of|to the right of) (a|an) ([\w ]+?)"
                       r"( among| with|$)", text)
  head = text[:relation.start()] if relation else text
  if relation:
    words = relation[3].split()
    assert any(
        scenes._relation(main, o) == relation[1]  # pylint: disable=protected-access
        and all(w == o[0] or w == o[1] or w in ("small", "little") or w in scenes._NOUNS
                for w in words) for o in others), (text, scene.objects)
    named.add("relation")
  for key, values in WORDS.items():
    found = [w for w in head.split() if w in values]
    assert all(w == (main[0] if key == "shape" else main[1]) for w in found), (text, scene.objects)
    named |= {key} if found else set()
  sizes = [s for s, words in scenes._SIZE_WORDS.items()  # pylint: disable=protected-access
           if any(re.search(rf"\b{w}\b", head) for w in words)]
  assert sizes in ([], [main.size]), (text, scene.objects)
  named |= {"size"} if sizes else set()
  return named


def test_captions_and_speech_tell_the_truth_and_never_everything(plans):
  lengths, subsets = [], set()
  for split in plans:
    for _, scene, caption, spoken, *_ in plans[split]:
      subsets.add(frozenset(_named(caption, scene)))
      _named(spoken, scene)
      lengths.append(len(caption.split()))
  assert min(lengths) >= scenes.MIN_CAPTION_WORDS  # A 15 % word mask hides at least one.
  everything = {"colour", "shape", "size", "position", "count", "relation"}
  assert everything not in subsets and len(subsets) > 10


def test_render_draws_each_object_in_its_cell():
  rng = np.random.default_rng(0)
  for _ in range(20):
    scene = scenes.make_scene(rng, held_out=False)
    image = scenes.render(scene, np.random.default_rng(1)).astype(int)
    assert image.shape == (32, 32, 3)
    for obj in scene.objects:
      # The object's centre has its colour (noise and antialiasing aside).
      assert np.abs(image[int(obj.y), int(obj.x)] - np.array(scenes.COLOURS[obj.colour])).max(
      ) < 60, obj
    far = np.ones((32, 32), bool)  # Pixels no object comes near are background.
    yy, xx = np.mgrid[:32, :32] + 0.5
    for obj in scene.objects:
      far &= np.hypot(xx - obj.x, yy - obj.y) > obj.radius * 1.5 + 1
    assert np.abs(image[far] - scene.background).max() < 30


@pytest.fixture(scope="module")
def scenes_dir(data_dir):
  """The runlocal slice (300 scenes) built in the shared test data directory."""
  import filelock  # pylint: disable=g-import-not-at-top
  from configs import pretrain_scenes  # pylint: disable=g-import-not-at-top
  from mmjax.data import loader  # pylint: disable=g-import-not-at-top
  with filelock.FileLock(data_dir + ".scenes.lock"):
    cfg = pretrain_scenes.get_config("runlocal").data
    cfg.dir = data_dir
    loader.prepare(cfg)
  return data_dir


def test_a_slice_reads_each_attribute_as_the_label(scenes_dir):
  from configs import finetune_scenes  # pylint: disable=g-import-not-at-top
  from mmjax.data import loader, sampling, sources  # pylint: disable=g-import-not-at-top
  from mmjax.data import pipeline  # pylint: disable=g-import-not-at-top
  from mmjax.errors import UserError  # pylint: disable=g-import-not-at-top
  cfg = finetune_scenes.get_config("attribute=count,runlocal").data
  cfg.dir = scenes_dir
  info = loader.prepare(cfg)
  assert info.class_names == scenes.COUNTS and info.num_classes == 3
  assert info.split_sizes == scenes.split_sizes(300) and min(info.split_sizes.values()) >= 10
  stored = sources.data_source(cfg, "test")
  batch = next(loader.split_batches(cfg, info, "test", 8))
  np.testing.assert_array_equal(batch["label"], [stored[i]["count"] for i in range(8)])
  reader = pipeline.Reader(cfg, info, "train", train=True)
  subset = sampling.labelled_subset(reader, 4, seed=0)
  counts = np.bincount([stored_count for stored_count in
                        (sources.data_source(cfg, "train")[i]["count"] for i in subset)])
  assert counts.tolist() == [4, 4, 4]
  cfg.label_key = "colours"
  with pytest.raises(UserError, match=r"label_key='colours'.*'colour'"):
    loader.prepare(cfg)


REFERENCE = pathlib.Path(__file__).resolve().parents[1] / "configs" / "reference" / (
    "pretrain_scenes_runlocal.json")


@pytest.mark.slow
def test_pretrains_on_a_slice_as_the_reference_did(scenes_dir, tmp_path):
  """main.py on the slice evaluates pair retrieval and zero-shot shape / colour, and its
  losses and metrics match configs/reference/pretrain_scenes_runlocal.json."""
  from mmjax.sweep import reference  # pylint: disable=g-import-not-at-top
  pre = tmp_path / "pre"
  out = subprocess.run([sys.executable, "main.py", "--config=configs/pretrain_scenes.py:runlocal",
                        f"--workdir={pre}", f"--config.data.dir={scenes_dir}"], check=True,
                       capture_output=True, text=True, cwd=REFERENCE.parents[2])
  assert "(a hit is the paired item itself)" in out.stdout
  last = json.loads((pre / "metrics.jsonl").read_text().splitlines()[-1])
  assert {"eval/zero_shot_shape/image/accuracy", "eval/zero_shot_colour/audio/accuracy",
          "eval/retrieval/image_to_text/r@5"} <= set(last)
  rows = reference.compare(str(pre), json.loads(REFERENCE.read_text()))
  assert rows and all(ok for *_, ok in rows), [r for r in rows if not r[-1]]
