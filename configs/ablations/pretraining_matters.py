r"""Does pretraining matter on the ablations' benchmark? The default pretraining against the
raw input and the randomly initialised encoder, by the probe and fine-tune protocols every
other sweep here uses. If it does not beat both, no ablation here can test a paper's claim.

Paper: none; the precondition of MAE's, M3AE's and AudioMAE's comparisons (MAE §4: "All
fine-tuning results in Figure 5 are better than training from scratch (82.5%)"; its linear
probe of 73.5 % at 75 % masking, ImageNet-1k, ViT-L).

Here: configs/pretrain_scenes.py:ablation (all objectives), then a linear probe of the main
object's shape and of the number of objects from images, and a full fine-tune of the shape
with 10 labelled scenes per shape, judged on the test split (new scenes, frames, voices) and
reported on test_novel too (main objects of shape-colour pairs training never shows); the
baselines run the same downstream stages without pretraining (random_init) and as a linear
classifier on pixels (raw_input).

At pod scale (`--sweep=configs/ablations/pretraining_matters.py:pod`, configs/common.py:
scale): the default pretraining (size B, COCO captions 0.7 + LibriSpeech 0.3, 20,000 steps of
1,024), then an ImageNet probe and a fine-tune on 13 labels per class; random-init baseline
only (a linear classifier on ImageNet pixels says little). 118 accelerator-hours for 3 seeds on
H100 SXM5 at an assumed 40 % MFU, training steps only, by the planner:

  python -m mmjax.sweep --sweep=configs/ablations/pretraining_matters.py:pod --workdir=W --cost
  python -m mmjax.sweep --sweep=configs/ablations/pretraining_matters.py:pod --workdir=W \
      --set=data.dir=/path/to/tensorflow_datasets --launcher=slurm

This machine's scale:

  python -m mmjax.sweep --sweep=configs/ablations/pretraining_matters.py \
      --workdir=workdirs/ablations/pretraining_matters \
      --report=docs/ablations/pretraining_matters
"""
from configs import common
from mmjax.sweep import LABEL, Claim, Sweep

PROBE_SHAPE = "probe_shape/eval/classification/accuracy"
PROBE_COUNT = "probe_count/eval/classification/accuracy"
FEWSHOT = "fewshot_shape/eval/classification/accuracy"


def get_sweep(arg=""):
  scale = common.scale(arg)
  if scale.name:  # A pod's labelled data is ImageNet: the image sweeps' probe and fine-tune.
    transfer = scale.shape_transfer()
    downstream = {"probe_shape": transfer["probe"], "fewshot_shape": transfer["finetune10"]}
  else:
    downstream = {"probe_shape": common.downstream("shape"),
                  "probe_count": common.downstream("count"),
                  "fewshot_shape": common.downstream("shape", mode="full", labels=10)}
  metrics = tuple(m for m in (PROBE_SHAPE, PROBE_COUNT, FEWSHOT)
                  if m.partition("/")[0] in downstream)
  claims = []
  for metric, what in ((PROBE_SHAPE, "a linear probe of the shape"),
                       (PROBE_COUNT, "a linear probe of the count"),
                       (FEWSHOT, "fine-tuning the shape on 10 labels per shape")):
    for baseline, name in (("raw_input", "the raw pixels"), ("random_init", "a random encoder")):
      if metric in metrics and baseline in scale.baselines:
        claims.append(Claim(text=f"pretraining beats {name} in {what}", metric=metric,
                            greater="default", than=f"baseline:{baseline}",
                            paper="none: the precondition of the other sweeps' claims"))
  return Sweep(
      base=scale.base,
      points=[{LABEL: "default"}],
      x=LABEL,
      seeds=common.ABLATION_SEEDS,
      downstream=downstream,
      baselines=scale.baselines,
      # Claims are judged on the test split; test_novel (held-out shape-colour pairs) is reported.
      metrics=metrics + tuple(m.replace("/classification/", "/classification_novel/")
                              for m in metrics if not scale.name),
      claims=tuple(claims))
