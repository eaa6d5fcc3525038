"""Trunkline: a real-time messaging server speaking the Centrifugo client protocol."""

__version__ = "0.1.0"
