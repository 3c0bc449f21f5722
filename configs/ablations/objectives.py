r"""Which objective buys what: contrastive only, masked modeling only, both.

Reproduces no single figure: the question behind the objective combinations of VATT, M3AE and
FLIP. Expected: retrieval and zero-shot classification need the contrastive loss (masked
modeling alone aligns no embeddings); masked modeling helps fine-tuning with few labels.

Here: the demo's objectives at the ablation scale, with the masked image / text / audio
objectives off, with the contrastive objective off, or all on; measured by test-split retrieval
(mean R@1 of the six directions), zero-shot accuracy on images and voices, and full fine-tuning
on images with 1 and 5 labelled images per class, 2 seeds.

  python -m mmjax.sweep --sweep=configs/ablations/objectives.py \
      --workdir=workdirs/ablations/objectives --report=docs/ablations/objectives
"""
from configs import common
from mmjax.sweep import LABEL, Downstream, Sweep

MASKED_OFF = {"objectives.masked_image.weight": 0.0, "objectives.masked_text.weight": 0.0,
              "objectives.masked_audio.weight": 0.0}


def get_sweep():
  return Sweep(
      base="configs/pretrain_digits.py:ablation",
      points=[{LABEL: "contrastive only", **MASKED_OFF},
              {LABEL: "masked only", "objectives.contrastive.weight": 0.0},
              {LABEL: "both"}],
      x=LABEL,
      seeds=(0, 1),
      downstream={"fewshot1": Downstream("configs/finetune_digits.py:task=image,labels=1"),
                  "fewshot5": Downstream("configs/finetune_digits.py:task=image,labels=5")},
      metrics=("pretrain/eval/zero_shot/image/accuracy", "pretrain/eval/zero_shot/audio/accuracy",
               "fewshot1/eval/classification/accuracy", "fewshot5/eval/classification/accuracy"),
      mean_of={"retrieval mean R@1": common.retrieval_r1()})
