r"""Sigmoid (SigLIP) against softmax (InfoNCE) contrastive loss across batch sizes.

Reproduces: Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training", Fig. 2: the
sigmoid loss beats the softmax loss at small batch sizes, and the gap closes as the batch grows.

Here: the contrastive objective alone (all three modality pairs; masked modeling off) on the
built-in digits at the ablation scale (300 steps at each batch size), InfoNCE and SigLIP at
batch 16 / 32 / 64 / 128, measured by test-split retrieval R@1 in all six directions and their
mean, 2 seeds.

  python -m mmjax.sweep --sweep=configs/ablations/contrastive_loss_batch.py \
      --workdir=workdirs/ablations/contrastive_loss_batch \
      --report=docs/ablations/contrastive_loss_batch
"""
from configs import common
from mmjax.sweep import Sweep, product

R1 = common.retrieval_r1()
CONTRASTIVE_ONLY = {"objectives.masked_image.weight": 0.0, "objectives.masked_text.weight": 0.0,
                    "objectives.masked_audio.weight": 0.0}


def get_sweep():
  return Sweep(
      base="configs/pretrain_digits.py:ablation",
      overrides=CONTRASTIVE_ONLY,
      points=product(objectives__contrastive__type=("infonce", "siglip"),
                     batch_size=(16, 32, 64, 128)),
      x="batch_size",
      series="objectives.contrastive.type",
      seeds=(0, 1),
      metrics=R1,
      mean_of={"mean R@1": R1})
