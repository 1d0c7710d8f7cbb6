"""Decoders: raw network maps -> Detections."""
