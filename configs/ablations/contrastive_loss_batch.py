r"""Sigmoid (SigLIP) against softmax (InfoNCE) contrastive loss across batch sizes, with the
examples seen held fixed.

Paper: Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training", §4.1-4.2 and Fig. 2.
Protocol: the contrastive loss alone; at each batch size the same number of examples seen (9B
for SigLIP, 18B for SigLiT), so a larger batch takes fewer steps; the sigmoid loss's bias
initialised at -10 and its temperature at log 10 (Table 4: 63.0 ImageNet 0-shot against 61.7
with bias 0). "When the batch size is smaller than 16 k, sigmoid loss outperforms softmax loss
by a large margin ... softmax loss quickly catches up" as the batch grows. Fig. 2's values
are in the plot only.

Here: the contrastive objective alone (all three pairs of image, caption and speech; masked
modeling off) at the ablation scale of configs/pretrain_scenes.py, InfoNCE and SigLIP at batch
16 / 32 / 64 / 128, each for 32,000 examples (2,000 / 1,000 / 500 / 250 steps; warmup scaled
alike), judged by instance-level retrieval on the test split (a hit is the paired item
itself): mean R@5 of the six directions. Baselines do not apply (no downstream stage).

At pod scale (`--sweep=configs/ablations/contrastive_loss_batch.py:pod`, configs/common.py:
scale): COCO captions, size B, batch 256 / 1,024 / 4,096 / 16,384 at 20.5 M examples each,
judged by image-text retrieval. 42 accelerator-hours for 3 seeds on H100 SXM5 at an assumed 40
% MFU, training steps only, by the planner:

  python -m mmjax.sweep --sweep=configs/ablations/contrastive_loss_batch.py:pod --workdir=W --cost
  python -m mmjax.sweep --sweep=configs/ablations/contrastive_loss_batch.py:pod --workdir=W \
      --set=data.dir=/path/to/tensorflow_datasets --launcher=slurm

This machine's scale:

  python -m mmjax.sweep --sweep=configs/ablations/contrastive_loss_batch.py \
      --workdir=workdirs/ablations/contrastive_loss_batch \
      --report=docs/ablations/contrastive_loss_batch
"""
from configs import common
from mmjax.sweep import LABEL, Claim, Sweep

CONTRASTIVE_ONLY = {"objectives.masked_image.weight": 0.0, "objectives.masked_text.weight": 0.0,
                    "objectives.masked_audio.weight": 0.0}
# Batches per scale; every point sees the scale's default examples (steps x batch), with
# warmup over the same share of them (40 of 500 steps).
BATCHES = {"": (16, 32, 64, 128), "pod": (256, 1024, 4096, 16384)}
WARMUP_SHARE = 40 / 500
R5 = "mean R@5"


def point(loss, batch, examples):
  steps = examples // batch
  return {LABEL: f"{loss}, batch {batch}", "objectives.contrastive.type": loss,
          "batch_size": batch, "total_steps": steps, "eval_every": steps,
          "checkpoint_every": steps, "optimizer.warmup_steps": round(steps * WARMUP_SHARE)}


def get_sweep(arg=""):
  scale = common.scale(arg)
  examples = scale.steps * scale.batch
  small, *_, large = batches = BATCHES[scale.name]
  paper = "§4.1: sigmoid beats softmax by a large margin below 16k; the gap closes as it grows"
  return Sweep(
      base=scale.image_text,
      overrides=CONTRASTIVE_ONLY,
      points=[point(loss, batch, examples) for loss in ("infonce", "siglip")
              for batch in batches],
      x="batch_size",
      series="objectives.contrastive.type",
      seeds=common.ABLATION_SEEDS,
      metrics=scale.retrieval_r(1),
      mean_of={R5: scale.retrieval_r(5), "mean R@1": scale.retrieval_r(1)},
      claims=(
          Claim(f"SigLIP beats InfoNCE at batch {small}", R5, greater=f"siglip, batch {small}",
                than=f"infonce, batch {small}", paper=paper),
          Claim(f"SigLIP's lead shrinks from batch {small} to {large}", R5,
                greater=(f"siglip, batch {small}", f"infonce, batch {large}"),
                than=(f"infonce, batch {small}", f"siglip, batch {large}"), paper=paper),
      ))
