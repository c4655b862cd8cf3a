"""Request and response models of the torchlab HTTP API (pydantic; no torch import here)."""
