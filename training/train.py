"""Train BIOSCAN-CLIP (CLIBD) with Accelerate, from one CPU to many GPUs.

    accelerate launch training/train.py --config training/configs/clibd_bioscan5m.yaml \
        --dataset data/bioscan5m --output_dir outputs/clibd5m
    accelerate launch --config_file training/accelerate/multi_gpu.yaml training/train.py --config ...
    python training/train.py --help          # every setting (training/config.py)

The recipe is the original's (reference §2): AdamW (weight decay 0.01), OneCycle with max lr
5e-5 x global batch / 500 stepped per batch, the mean symmetric InfoNCE over the enabled modality
pairs with negatives gathered from every process (``training/loss.py``), model selection by the
mean top-1 accuracy of the paper's protocol on the val splits. This file is the entry point:
settings (``config``, parsed before the heavy imports so that ``--help`` and a mistyped setting
answer at once), then the loop (``loop``). A mistake in the settings or inputs, or a loss that
turns non-finite, is one line on stderr and exit code 2.

Example (tests, notebooks):
    >>> from training.train import main
    >>> summary = main(["--config", "training/configs/demo_synthetic.yaml", "--dataset", "outputs/demo/data"])
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script (`accelerate launch training/train.py`): import `training.*` from the repo
    # root, and take training/ itself off the path so that training/evaluate.py cannot shadow the
    # `evaluate` library.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from typing import Any

from training.arguments import run_cli
from training.config import parse_args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``--config`` + overrides and train; returns the run summary."""
    cfg = parse_args(argv)
    from training.loop import train  # torch, accelerate, datasets: only once the settings are valid

    return train(cfg)


if __name__ == "__main__":
    # FloatingPointError: training.loop.NonFiniteLossError, named by its base so that this entry point
    # does not import the loop before the settings are parsed.
    raise SystemExit(run_cli(main, prog="train.py", expected=(FloatingPointError,)))
