"""The distribution ships every sub-package and the card templates (a non-editable install renders cards)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_package_list_covers_every_sub_package():
    declared = set(_pyproject()["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "bioscan_clip_hf").rglob("__init__.py")
    }
    assert on_disk - declared == set(), "sub-packages missing from [tool.setuptools] packages"
    assert "bioscan_clip_hf.hub_cards" in declared


def test_card_templates_are_package_data():
    from bioscan_clip_hf.hub_cards import DATASET_CARD_TEMPLATE, MODEL_CARD_TEMPLATE

    setuptools = _pyproject()["tool"]["setuptools"]
    assert setuptools["package-dir"]["bioscan_clip_hf.hub_cards"] == "hub_cards"
    for template in (MODEL_CARD_TEMPLATE, DATASET_CARD_TEMPLATE):
        assert template.is_file() and template.parent == ROOT / "hub_cards"
        assert any(template.match(pattern) for pattern in setuptools["package-data"]["bioscan_clip_hf.hub_cards"])
