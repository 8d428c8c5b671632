"""BIOSCAN-CLIP (CLIBD) for Hugging Face: images, DNA barcodes and taxonomy in one embedding space."""

__version__ = "0.1.0"
