r"""AudioMAE's mask ratio, with audio alone.

Reproduces: Huang et al. 2022, "Masked Autoencoders that Listen" (AudioMAE), the mask-ratio
ablation (AudioSet-20K): 0.8 is best, higher than images' 0.75, and 0.5 or 0.9 are worse.

Here: masked audio modeling alone (log-mel patches; the other objectives off) on the built-in
spoken digits at the ablation scale, audio mask ratio 0.5 / 0.7 / 0.8 / 0.9, then a linear
probe on audio (configs/finetune_digits.py:task=audio,mode=probe), 2 seeds.

  python -m mmjax.sweep --sweep=configs/ablations/audio_mask_ratio.py \
      --workdir=workdirs/ablations/audio_mask_ratio --report=docs/ablations/audio_mask_ratio
"""
from mmjax.sweep import Downstream, Sweep, product

AUDIO_ONLY = {"objectives.contrastive.weight": 0.0, "objectives.masked_text.weight": 0.0,
              "objectives.masked_image.weight": 0.0}


def get_sweep():
  return Sweep(
      base="configs/pretrain_digits.py:ablation",
      overrides=AUDIO_ONLY,
      points=product(objectives__masked_audio__mask_ratio=(0.5, 0.7, 0.8, 0.9)),
      x="objectives.masked_audio.mask_ratio",
      seeds=(0, 1),
      downstream={"probe": Downstream("configs/finetune_digits.py:task=audio,mode=probe")},
      metrics=("probe/eval/classification/accuracy",))
