"""``zero-shot-image-classification`` pipeline of BIOSCAN-CLIP: candidate labels in the model's own text format.

The stock pipeline writes every label into ``"This is a photo of {}."`` and pads to the longest label.
BIOSCAN-CLIP's text tower was trained on bare taxonomy strings (``"Order Family Genus Species"``,
``not_classified`` for missing ranks) of exactly ``text_max_length`` (20) tokens, so this pipeline
uses the labels as they are (``hypothesis_template="{}"``) and tokenises them as the processor does
(padded and truncated to 20 tokens). Both stay overridable per call. The model folder names this
class in ``config.json`` (``custom_pipelines``), so ``pipeline("zero-shot-image-classification",
model=DIR, trust_remote_code=True)`` builds it. Hub file: imports only public ``transformers`` names.

Example:
    >>> clf = pipeline("zero-shot-image-classification", model=DIR, trust_remote_code=True)  # doctest: +SKIP
    >>> clf("specimen.jpg", candidate_labels=["Diptera Culicidae Aedes Aedes aegypti",
    ...                                        "Diptera Culicidae Culex Culex pipiens"])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from transformers import ZeroShotImageClassificationPipeline

TASK = "zero-shot-image-classification"
DEFAULT_TEMPLATE = "{}"


class BioscanClipZeroShotImageClassificationPipeline(ZeroShotImageClassificationPipeline):
    """The stock pipeline with BIOSCAN-CLIP's defaults: labels used as written, text padded/truncated to
    ``config.text_max_length`` tokens. Pass ``hypothesis_template="{} not_classified not_classified
    not_classified"`` to classify order names, for example."""

    def preprocess(
        self,
        image: Any,
        candidate_labels: list[str] | None = None,
        hypothesis_template: str = DEFAULT_TEMPLATE,
        timeout: float | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        length = getattr(self.model.config, "text_max_length", 20)
        text_kwargs = {"padding": "max_length", "max_length": length, "truncation": True, **(tokenizer_kwargs or {})}
        return super().preprocess(image, candidate_labels, hypothesis_template, timeout, text_kwargs)


def custom_pipelines_entry() -> dict[str, dict[str, Any]]:
    """The ``config.json`` ``custom_pipelines`` value that makes ``pipeline()`` build this class."""
    return {TASK: {"impl": f"{__name__.rsplit('.', 1)[-1]}.{BioscanClipZeroShotImageClassificationPipeline.__name__}",
                   "pt": ["AutoModelForZeroShotImageClassification"], "type": "multimodal"}}
