r"""Which objective buys what: the contrastive loss alone, masked modeling alone, or both.

Papers: (a) Singh et al. 2022, FLAVA, Table 4 (ViT-B/16 towers, PMD 70M pairs): adding masked
multimodal modeling and image-text matching to the global contrastive loss (the contrastive
embeddings from unmasked inputs) lifts zero-shot retrieval (Flickr30K image R@1 60.56 ->
63.16, text 68.30 -> 69.30) and the ImageNet linear probe (74.09 -> 74.34); masked modeling is
not added alone there. (b) Li et al. 2023, FLIP, Table 1f: adding an MAE reconstruction loss to
the contrastive loss slightly lowers ImageNet zero-shot (69.6 -> 69.4 at 50 % masking, 68.2
-> 67.9 at 75 %). (c) Masked modeling alone aligns no embeddings (no claim: a sanity check).

Here: at the ablation scale of configs/pretrain_scenes.py, the contrastive objective alone,
the three masked objectives alone, or all four (the default); judged on the test split by
instance-level retrieval (mean R@5 of the six directions), zero-shot classification of the
five scene attributes from images (their mean accuracy), a linear probe of the shape and a
full fine-tune of it with 10 labels per shape. Baselines: the downstream stages from a random
encoder and on raw pixels.

At pod scale (`--sweep=configs/ablations/objectives.py:pod`, configs/common.py: scale): size B
on COCO captions 0.7 + LibriSpeech 0.3 (20,000 steps of 1,024), judged by image-text retrieval,
an ImageNet probe and a 13-per-class fine-tune; no zero-shot evaluator there, so the zero-shot
claim is left out. 236 accelerator-hours for 3 seeds on H100 SXM5 at an assumed 40 % MFU,
training steps only, by the planner:

  python -m mmjax.sweep --sweep=configs/ablations/objectives.py:pod --workdir=W --cost
  python -m mmjax.sweep --sweep=configs/ablations/objectives.py:pod --workdir=W \
      --set=data.dir=/path/to/tensorflow_datasets --launcher=slurm

This machine's scale:

  python -m mmjax.sweep --sweep=configs/ablations/objectives.py \
      --workdir=workdirs/ablations/objectives --report=docs/ablations/objectives
"""
from configs import common
from mmjax.sweep import LABEL, Claim, Sweep

MASKED_OFF = {"objectives.masked_image.weight": 0.0, "objectives.masked_text.weight": 0.0,
              "objectives.masked_audio.weight": 0.0}
PROBE = "probe/eval/classification/accuracy"
FINETUNE = "finetune10/eval/classification/accuracy"
ZERO_SHOT = "zero-shot mean"
R5 = "retrieval mean R@5"


def get_sweep(arg=""):
  scale = common.scale(arg)
  mean_of = {R5: scale.retrieval_r(5)}
  if scale.zero_shot:  # The pod scale has no zero-shot evaluator: its claim is left out there.
    mean_of[ZERO_SHOT] = scale.zero_shot
  claims = (
      Claim("adding masked modeling to the contrastive loss improves retrieval", R5,
            greater="both", than="contrastive only",
            paper="FLAVA Table 4: Flickr30K zero-shot image R@1 60.56 -> 63.16"),
      Claim("adding masked modeling to the contrastive loss improves the linear probe", PROBE,
            greater="both", than="contrastive only",
            paper="FLAVA Table 4: ImageNet linear eval 74.09 -> 74.34"),
      Claim("adding masked modeling to the contrastive loss lowers zero-shot accuracy",
            ZERO_SHOT, greater="contrastive only", than="both",
            paper="FLIP Table 1f: ImageNet zero-shot 69.6 -> 69.4 with an MAE loss"))
  return Sweep(
      base=scale.base,
      points=[{LABEL: "contrastive only", **MASKED_OFF},
              {LABEL: "masked only", "objectives.contrastive.weight": 0.0},
              {LABEL: "both"}],
      x=LABEL,
      seeds=common.ABLATION_SEEDS,
      downstream=scale.shape_transfer(),
      baselines=scale.baselines,
      metrics=(PROBE, FINETUNE),
      mean_of=mean_of,
      claims=tuple(c for c in claims if c.metric in (PROBE, FINETUNE, *mean_of)))
