"""nasctl: hardware-aware neural architecture search from real device measurements."""

__version__ = "0.1.0"
