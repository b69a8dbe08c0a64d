"""llama-swap for Python: an on-demand model-swapping proxy for local inference servers."""

__version__ = "0.1.0"
