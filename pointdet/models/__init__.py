"""Backbones, necks, heads and the detector that composes them."""
