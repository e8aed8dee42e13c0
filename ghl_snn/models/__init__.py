"""Network architectures of the papers' experiments."""
from .deephebb import DeepHebb
from .fasthebb import FastHebb

MODELS = {"deephebb": DeepHebb, "fasthebb": FastHebb}

__all__ = ["DeepHebb", "FastHebb", "MODELS"]
