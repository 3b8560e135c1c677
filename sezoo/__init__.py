"""sezoo: a Lightning-based zoo of compression recipes for speech enhancement."""

__version__ = "0.1.0"
