r"""M3AE's text mask ratio: masked modeling of images and text in one sequence, judged by
transfer to images alone.

Paper: Geng et al. 2022, "Multimodal Masked Autoencoders Learn Transferable Representations"
(CC12M). Protocol (its released code, young-geng/m3ae_public): one encoder over image patches
and text tokens together, image and text masked (defaults 0.75 / 0.75), no contrastive loss;
judged by an ImageNet linear probe of the image-only representation (affine-free BatchNorm,
linear layer, LARS, 90 epochs). Abstract: "M3AE benefits from a higher text mask ratio
(50-90%), in contrast to BERT whose standard masking ratio is 15%, due to the joint training of
two data modalities." Its per-ratio numbers could not be read from the paper here (notes
elsewhere cite 45.9 / 61.0 / 64.1 / 63.9 at 15 / 50 / 75 / 90 %: unverified, not quoted).

Here: joint fusion, masked image (0.75) and masked text modeling only (contrastive and audio
off) at the ablation scale of configs/pretrain_scenes.py, text mask ratio 0.15 / 0.5 / 0.75
(captions are at least 8 words, so 15 % hides at least one); then, from images alone, a linear
probe of the main object's shape (M3AE's judge) and a full fine-tune of it with 10 labelled
scenes per shape. Baselines: the same stages from a random encoder and on raw pixels.

At pod scale (`--sweep=configs/ablations/text_mask_ratio.py:pod`, configs/common.py: scale):
size B on COCO captions 0.7 + LibriSpeech 0.3 (20,000 steps of 1,024), then an ImageNet probe
and a fine-tune on 13 labels per class; random-init baseline. 84 accelerator-hours for 3 seeds
on H100 SXM5 at an assumed 40 % MFU, training steps only, by the planner:

  python -m mmjax.sweep --sweep=configs/ablations/text_mask_ratio.py:pod --workdir=W --cost
  python -m mmjax.sweep --sweep=configs/ablations/text_mask_ratio.py:pod --workdir=W \
      --set=data.dir=/path/to/tensorflow_datasets --launcher=slurm

This machine's scale:

  python -m mmjax.sweep --sweep=configs/ablations/text_mask_ratio.py \
      --workdir=workdirs/ablations/text_mask_ratio --report=docs/ablations/text_mask_ratio
"""
from configs import common
from mmjax.sweep import LABEL, Claim, Sweep

M3AE = {"model.fusion": "joint", "objectives.contrastive.weight": 0.0,
        "objectives.masked_audio.weight": 0.0, "objectives.masked_image.mask_ratio": 0.75}
PROBE = "probe/eval/classification/accuracy"
FINETUNE = "finetune10/eval/classification/accuracy"
RATIOS = (0.15, 0.5, 0.75)


def get_sweep(arg=""):
  scale = common.scale(arg)
  paper = "abstract: a higher text mask ratio (50-90 %) beats BERT's 15 % (numbers: not verified)"
  return Sweep(
      base=scale.base,
      overrides=M3AE,
      points=[{LABEL: f"text mask {r}", "objectives.masked_text.mask_ratio": r} for r in RATIOS],
      x="objectives.masked_text.mask_ratio",
      seeds=common.ABLATION_SEEDS,
      downstream=scale.shape_transfer(),
      baselines=scale.baselines,
      metrics=(PROBE, FINETUNE),
      claims=(
          Claim("the image probe is better after 50 % text masking than 15 %", PROBE,
                greater="text mask 0.5", than="text mask 0.15", paper=paper),
          Claim("the image probe is better after 75 % text masking than 15 %", PROBE,
                greater="text mask 0.75", than="text mask 0.15", paper=paper),
          Claim("fine-tuning on images is better after 75 % text masking than 15 %", FINETUNE,
                greater="text mask 0.75", than="text mask 0.15", paper=paper),
      ))
