"""Model and dataset card templates, installed with the package as ``bioscan_clip_hf.hub_cards``."""

from pathlib import Path

MODEL_CARD_TEMPLATE = Path(__file__).with_name("model_card_template.md")
DATASET_CARD_TEMPLATE = Path(__file__).with_name("dataset_card_template.md")
