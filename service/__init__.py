"""torchlab: PyTorch's fundamentals over HTTP."""

__version__ = "0.1.0"
