r"""mmjax entry point: flags -> config -> mmjax.train.trainer.train_and_evaluate (mmjax.cli).

  python main.py --config=configs/pretrain_digits.py --workdir=workdirs/digits
  python main.py --config=configs/pretrain_digits.py:runlocal --workdir=/tmp/x \
      --config.batch_size=32

Several processes (pods, clusters, local testing): docs/launching.md.
"""
import os

# TensorFlow (used only to build datasets) is chatty at import time.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from mmjax import cli  # noqa: E402

if __name__ == "__main__":
  cli.run()
