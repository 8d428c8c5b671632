"""Evaluate a saved model with the paper's zero-shot protocol (same as ``bioscan-clip eval``).

Queries ``val``/``val_unseen`` (``--split val``) or ``test``/``test_unseen`` (``--split test``) against
the data set's evaluation keys (``key_seen`` + ``key_unseen`` for a BIOSCAN-1M build, ``train`` +
``key_unseen`` otherwise; ``--key-splits`` to choose), every query -> key pair the model and data support; writes
``results.json``, ``results.md`` (paper-style table) and ``accuracy.png`` into ``--out``.

Example::

    python training/evaluate.py --model outputs/demo/model --data outputs/demo/data --split test \\
        --out outputs/demo/eval --title "synthetic data"

From Python (e.g. inside training): ``bioscan_clip_hf.evaluation.evaluate_model(model, processor, data)``.
"""

import sys
from pathlib import Path

# Run as a script, this file's folder is first on sys.path and its name would shadow the
# `evaluate` library for every later `import evaluate`; take the folder off the path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from bioscan_clip_hf.cli import main  # noqa: E402  (after the sys.path fix above)

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
