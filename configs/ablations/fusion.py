r"""Separate or joint encoding for masked modeling, and the contrastive view.

Reproduces the fusion comparison of AV-MAE (Georgescu et al. 2023, "Audiovisual Masked
Autoencoders") and M3AE: early (joint) fusion of the modalities in one sequence against
separate per-modality passes; and FLIP's (Li et al. 2023) contrastive loss on the masked view
(cheaper) against an extra unmasked ('clean') pass.

Here: the demo's objectives at the ablation scale: separate + clean view (the default), joint +
clean view, separate + masked view; measured by test-split retrieval (mean R@1 of the six
directions) and full fine-tuning on images with 5 labelled images per class, 2 seeds.

  python -m mmjax.sweep --sweep=configs/ablations/fusion.py \
      --workdir=workdirs/ablations/fusion --report=docs/ablations/fusion
"""
from configs import common
from mmjax.sweep import LABEL, Downstream, Sweep



def get_sweep():
  return Sweep(
      base="configs/pretrain_digits.py:ablation",
      points=[{LABEL: "separate, clean view", "model.fusion": "separate"},
              {LABEL: "joint, clean view", "model.fusion": "joint"},
              {LABEL: "separate, masked view", "model.fusion": "separate",
               "objectives.contrastive.view": "masked"}],
      x=LABEL,
      seeds=(0, 1),
      downstream={"fewshot5": Downstream("configs/finetune_digits.py:task=image,labels=5")},
      metrics=("fewshot5/eval/classification/accuracy",),
      mean_of={"retrieval mean R@1": common.retrieval_r1()})
