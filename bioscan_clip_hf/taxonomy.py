"""The taxonomic ranks the model names, shared by data, classification, evaluation, cards, CLI and Space.

Free of imports, so light users such as the CLI parser can read it. The Hub files keep their own
wording of the taxonomy string (``processing_bioscan_clip.taxonomy_text``) because they must work
alone next to the weights.

Example:
    >>> from bioscan_clip_hf.taxonomy import RANKS
    >>> RANKS[-1]
    'species'
"""

RANKS: tuple[str, ...] = ("order", "family", "genus", "species")
