r"""MAE's mask ratio, with images alone.

Reproduces: He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners", Fig. 5
(ViT-L, ImageNet-1k): fine-tuning accuracy is best around a 75 % mask ratio and flat from about
40 % to 80 %; linear probing is more sensitive, rising steadily up to 75 % and falling after.

Here: masked image modeling alone (the other objectives off) on the built-in digits at the
ablation scale, image mask ratio 0.25 / 0.5 / 0.75 / 0.9, then a linear probe on images and a
full fine-tune with 5 labelled images per class (configs/finetune_digits.py), 2 seeds.

  python -m mmjax.sweep --sweep=configs/ablations/mae_mask_ratio.py \
      --workdir=workdirs/ablations/mae_mask_ratio --report=docs/ablations/mae_mask_ratio
"""
from mmjax.sweep import Downstream, Sweep, product

IMAGE_ONLY = {"objectives.contrastive.weight": 0.0, "objectives.masked_text.weight": 0.0,
              "objectives.masked_audio.weight": 0.0}


def get_sweep():
  return Sweep(
      base="configs/pretrain_digits.py:ablation",
      overrides=IMAGE_ONLY,
      points=product(objectives__masked_image__mask_ratio=(0.25, 0.5, 0.75, 0.9)),
      x="objectives.masked_image.mask_ratio",
      seeds=(0, 1),
      downstream={"probe": Downstream("configs/finetune_digits.py:task=image,mode=probe"),
                  "fewshot5": Downstream("configs/finetune_digits.py:task=image,labels=5")},
      metrics=("probe/eval/classification/accuracy", "fewshot5/eval/classification/accuracy"))
