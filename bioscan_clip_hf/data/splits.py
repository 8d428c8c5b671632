"""The paper's seen/unseen split rules for species-labelled records (CLIBD reference §2.1).

Species with at least ``min_records`` records are split by species: ``unseen_fraction`` of them
become *unseen*, the rest *seen*. Records of a seen species go 70/10/10/10 into
train/val/test/keys. By default the keys are part of ``train`` (the BIOSCAN-5M layout, where
``train`` is both training data and the seen keys), so a seen species contributes ~80 % ``train``,
10 % ``val`` and 10 % ``test``; with ``seen_keys_split="key_seen"`` they form a split of their own
(the BIOSCAN-1M layout, CLIBD's ``seen_keys``: keys, never training data). Unseen species go half to validation and half to test (by species); within each
species half of the records are queries (``val_unseen`` / ``test_unseen``) and half are keys
(``key_unseen``). Species with fewer records go to ``pretrain``, like CLIBD's ``single_species``
group. Records without a species label go to ``pretrain``.

Example:
    >>> splits = assign_paper_splits(["a", "a", "b", "b", None], seed=0)
    >>> len(splits), splits[-1]
    (5, 'pretrain')
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def _round_half_up(value: float) -> int:
    return int(np.floor(value + 0.5))


def assign_paper_splits(
    species: Sequence[str | None],
    seed: int = 42,
    unseen_fraction: float = 0.2,
    min_records: int = 2,
    seen_fractions: tuple[float, float, float] = (0.1, 0.1, 0.1),
    seen_keys_split: str = "train",
) -> list[str]:
    """Return a split name per record, following the paper's rules (see the module docstring).

    Args:
        species: species label per record (``None`` = unlabelled).
        seed: makes the assignment deterministic.
        unseen_fraction: share of eligible species that become unseen.
        min_records: species with fewer records go to ``pretrain``.
        seen_fractions: (val, test, keys) shares of a seen species' records.
        seen_keys_split: where a seen species' keys go: ``"train"`` (BIOSCAN-5M layout) or
            ``"key_seen"`` (BIOSCAN-1M layout).

    Every seen species keeps at least one ``train`` record; with ``key_seen``, every seen species of
    two or more records also has at least one key. Every unseen species with two or more records
    has at least one query and one key. The draws do not depend on ``seen_keys_split``: the two
    layouts differ only in the labels of the seen keys.
    """
    if seen_keys_split not in ("train", "key_seen"):
        raise ValueError(f"seen_keys_split must be 'train' or 'key_seen', got {seen_keys_split!r}")
    rng = np.random.default_rng(seed)
    by_species: dict[str, list[int]] = defaultdict(list)
    result = ["pretrain"] * len(species)
    for index, name in enumerate(species):
        if name is not None:
            by_species[name].append(index)
    eligible = sorted(name for name, indices in by_species.items() if len(indices) >= min_records)
    order = rng.permutation(len(eligible))
    n_unseen = _round_half_up(unseen_fraction * len(eligible))
    unseen = [eligible[i] for i in order[:n_unseen]]
    seen = [eligible[i] for i in order[n_unseen:]]
    val_share, test_share, key_share = seen_fractions
    for name in sorted(seen):
        indices = [by_species[name][i] for i in rng.permutation(len(by_species[name]))]
        n = len(indices)
        n_val = min(_round_half_up(val_share * n), max(n - 1, 0))
        n_test = min(_round_half_up(test_share * n), max(n - 1 - n_val, 0))
        n_keys = min(max(_round_half_up(key_share * n), 1), max(n - 1 - n_val - n_test, 0))
        splits = ["val"] * n_val + ["test"] * n_test + [seen_keys_split] * n_keys
        for position, index in enumerate(indices):
            result[index] = splits[position] if position < len(splits) else "train"
    # Unseen species alternate val/test in a random order, so the halves differ by at most one.
    for rank, name in enumerate(unseen):
        query_split = "val_unseen" if rank % 2 == 0 else "test_unseen"
        indices = [by_species[name][i] for i in rng.permutation(len(by_species[name]))]
        n_queries = len(indices) // 2
        for position, index in enumerate(indices):
            result[index] = query_split if position < n_queries else "key_unseen"
    return result
