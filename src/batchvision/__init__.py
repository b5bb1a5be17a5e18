"""batchvision: a self-hosted batch vision inference server and CLI."""

__version__ = "0.1.0"
