r"""AudioMAE's mask ratio, with audio alone, judged by fine-tuning.

Paper: Huang et al. 2022, "Masked Autoencoders that Listen", §4.4 and Fig. 4a (ViT-B, 128-bin
log-mel spectrograms in 16 x 16 patches, AudioSet-2M, 32 epochs). Protocol: masked
spectrogram modeling alone; evaluated by end-to-end fine-tuning (the decoder removed, average
pooling and a linear layer), AS-2M mAP. "A high pre-training masking ratio (80% in our case) is
optimal ... random masking improves steadily up to 80%." The per-ratio values are in the
figure only (its axis spans 44.5-47.5 mAP); the default reaches 47.3 mAP on AS-2M.

Here: masked audio modeling alone (log-mel patches of 8 frames x 8 mel bands; contrastive,
masked image and text off) at the ablation scale of configs/pretrain_scenes.py, audio mask
ratio 0.5 / 0.7 / 0.8 / 0.9; then full fine-tuning on every training clip to classify the
main object's shape from the speech describing the scene (layer-wise lr decay 0.75), test
split (voices training never hears). Baselines: the same fine-tune from a random encoder, and
a linear classifier on the log-mel spectrogram.

At pod scale (`--sweep=configs/ablations/audio_mask_ratio.py:pod`, configs/common.py: scale):
masked audio modeling on Speech Commands (size B, 20,000 steps of 1,024), then fine-tuning on
it; random-init baseline. 7.6 accelerator-hours for 3 seeds on H100 SXM5 at an assumed 40 %
MFU, training steps only, by the planner:

  python -m mmjax.sweep --sweep=configs/ablations/audio_mask_ratio.py:pod --workdir=W --cost
  python -m mmjax.sweep --sweep=configs/ablations/audio_mask_ratio.py:pod --workdir=W \
      --set=data.dir=/path/to/tensorflow_datasets --launcher=slurm

This machine's scale:

  python -m mmjax.sweep --sweep=configs/ablations/audio_mask_ratio.py \
      --workdir=workdirs/ablations/audio_mask_ratio --report=docs/ablations/audio_mask_ratio
"""
from configs import common
from mmjax.sweep import LABEL, Claim, Downstream, Sweep

AUDIO_ONLY = {"objectives.contrastive.weight": 0.0, "objectives.masked_image.weight": 0.0,
              "objectives.masked_text.weight": 0.0}
FINETUNE = "finetune/eval/classification/accuracy"
RATIOS = (0.5, 0.7, 0.8, 0.9)


def get_sweep(arg=""):
  scale = common.scale(arg)
  return Sweep(
      base=scale.audio,
      overrides=AUDIO_ONLY,
      points=[{LABEL: f"mask {r}", "objectives.masked_audio.mask_ratio": r} for r in RATIOS],
      x="objectives.masked_audio.mask_ratio",
      seeds=common.ABLATION_SEEDS,
      downstream={"finetune": Downstream(scale.audio_transfer)},
      baselines=scale.baselines,
      metrics=(FINETUNE,),
      claims=(
          Claim("fine-tuning is better after 80 % masking than after 50 %", FINETUNE,
                greater="mask 0.8", than="mask 0.5",
                paper="§4.4, Fig. 4a: 80 % optimal, rising steadily up to it (plot only; "
                      "47.3 mAP at 80 %)"),
          Claim("fine-tuning is better after 80 % masking than after 90 %", FINETUNE,
                greater="mask 0.8", than="mask 0.9",
                paper="§4.4, Fig. 4a: 80 % optimal (90 %: plot only)"),
      ))
