"""Convolution and pooling ops (filled in below)."""
__all__ = []
