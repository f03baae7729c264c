"""Provenance commands (filled in by the labelling work)."""
