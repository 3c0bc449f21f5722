r"""The masked-word ratio when images are present.

Reproduces: Geng et al. 2022, "Multimodal Masked Autoencoders Learn Transferable
Representations" (M3AE): with images in the same sequence, a high text mask ratio (50-75 %)
learns better representations than BERT's 15 %.

Here: the demo's objectives with M3AE's joint fusion (image, text and audio in one sequence for
masked modeling) at the ablation scale, masked-word ratio 0.15 / 0.3 / 0.5 / 0.75, measured by
text-image retrieval on the test split and the masked-LM accuracy at the end of training (on
the words each ratio hides, so a higher ratio asks more), 2 seeds.

  python -m mmjax.sweep --sweep=configs/ablations/text_mask_ratio.py \
      --workdir=workdirs/ablations/text_mask_ratio --report=docs/ablations/text_mask_ratio
"""
from mmjax.sweep import Sweep, product


def get_sweep():
  return Sweep(
      base="configs/pretrain_digits.py:ablation,fusion=joint",
      points=product(objectives__masked_text__mask_ratio=(0.15, 0.3, 0.5, 0.75)),
      x="objectives.masked_text.mask_ratio",
      seeds=(0, 1),
      metrics=("pretrain/eval/retrieval/text_to_image/r@1",
               "pretrain/eval/retrieval/image_to_text/r@1",
               "pretrain/train/masked_text/accuracy"))
