"""nightowl: a distributed batch platform for Transformer models."""

__version__ = "0.1.0"
