r"""A small sweep file for the sweep tests (tests/test_ablation_files.py, tests/test_sweep*.py):
two points, two baselines and claims, on the demo config. Not an ablation to report.

Paper: He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners", Fig. 5: the linear
probe is better at a 75 % image mask ratio than at 25 % (73.5 vs 66.0 on ImageNet-1k).

Here: the demo's pretraining at image mask ratio 0.25 and 0.75, then a linear probe on images;
the baselines probe a randomly initialised encoder (at the probe's learning rate, and at twice
it: a harmless override standing in for a real baseline's own, e.g. {"model.name": "raw"}).

  python -m mmjax.sweep --sweep=tests/sweep_with_claims.py \
      --workdir=workdirs/sweep_with_claims --runlocal
"""
from mmjax.sweep import LABEL, Claim, Downstream, Sweep

PROBE = "probe/eval/classification/accuracy"


def get_sweep():
  return Sweep(
      base="configs/pretrain_digits.py",
      points=[{LABEL: "mask25", "objectives.masked_image.mask_ratio": 0.25},
              {LABEL: "mask75", "objectives.masked_image.mask_ratio": 0.75}],
      x="objectives.masked_image.mask_ratio",
      seeds=(0, 1, 2),
      downstream={"probe": Downstream("configs/finetune_digits.py:task=image,mode=probe")},
      baselines={"random_init": {}, "random_init_lr2x": {"optimizer.lr": 0.02}},
      metrics=("pretrain/eval/retrieval/text_to_image/r@1", PROBE),
      claims=(
          Claim(text="the linear probe is better at 75 % than at 25 % masking", metric=PROBE,
                greater="mask75", than="mask25", paper="MAE Fig. 5: 73.5 vs 66.0"),
          Claim(text="pretraining at 75 % beats a random encoder", metric=PROBE,
                greater="mask75", than="baseline:random_init"),
      ))
