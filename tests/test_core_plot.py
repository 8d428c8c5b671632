"""The accuracy plot (issue 16): small multiples, one panel per query -> key pair, chance level marked,
the untrained baseline beside the aligned model, and a legend that covers no panel."""

from __future__ import annotations

import numpy as np
import pytest

RANKS = ("order", "family", "genus", "species")
PAIRS = ("image->image", "dna->dna", "image->dna", "dna->image", "image->text", "dna->text",
         "averaged->averaged", "concatenated->concatenated")


def _result(offset: float, title: str) -> dict:
    """An evaluate_model-shaped result with distinct values per pair, rank and group."""
    pairs = {}
    for p, pair in enumerate(PAIRS):
        pairs[pair] = {rank: {f"{group}_{avg}_top1": offset + 10 * r + p + (0.5 if group == "unseen" else 0)
                              for group in ("seen", "unseen") for avg in ("micro", "macro")}
                       for r, rank in enumerate(RANKS)}
    return {"protocol": {"query_splits": ["test", "test_unseen"], "key_splits": ["train", "key_unseen"],
                         "title": title}, "pairs": pairs}


def test_small_multiples_with_baseline_chance_and_a_legend_off_the_data(tmp_path):
    import matplotlib

    from bioscan_clip_hf.evaluation import accuracy_figure, plot_accuracy

    aligned, untrained = _result(40.0, "aligned, SYNTHETIC data"), _result(5.0, "untrained")
    chance = {"order": 25.0, "family": 10.0, "genus": 4.0, "species": 1.0}
    fig = accuracy_figure(aligned, baseline=untrained, chance=chance)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == [p.replace("->", " → ") for p in PAIRS]
    for ax, pair in zip(panels, PAIRS):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {"seen species", "unseen species", "seen species (untrained)",
                              "unseen species (untrained)", "chance"}
        np.testing.assert_allclose(lines["unseen species"].get_ydata(),
                                   [aligned["pairs"][pair][r]["unseen_macro_top1"] for r in RANKS])
        np.testing.assert_allclose(lines["seen species (untrained)"].get_ydata(),
                                   [untrained["pairs"][pair][r]["seen_macro_top1"] for r in RANKS])
        np.testing.assert_allclose(lines["chance"].get_ydata(), [chance[r] for r in RANKS])
        assert ax.get_legend() is None  # no legend inside a panel
    (legend,) = fig.legends
    renderer = fig.canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    assert not any(box.overlaps(ax.get_tightbbox(renderer)) for ax in panels)
    assert "SYNTHETIC" in fig.get_suptitle()
    matplotlib.pyplot.close(fig)

    path = plot_accuracy(aligned, tmp_path / "accuracy.png", baseline=untrained, chance=chance)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no query -> key pair"):
        accuracy_figure({"protocol": aligned["protocol"], "pairs": {}})
