"""obcp: One-bit Active Query with Contrastive Pairs as a reproducible DVC pipeline."""

__version__ = "0.1.0"
