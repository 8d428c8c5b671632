"""Taxonomic top-k accuracy (micro and macro), as in the BIOSCAN-CLIP / CLIBD evaluation."""
