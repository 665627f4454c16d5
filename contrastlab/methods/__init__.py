"""Contrastive methods, one file each. `METHODS` maps a method's name to (class, config class)."""
from .base import Method
from .simclr import SimCLR, SimCLRConfig

METHODS: dict[str, tuple[type[Method], type]] = {
    "simclr": (SimCLR, SimCLRConfig),
}

__all__ = ["METHODS", "Method", "SimCLR", "SimCLRConfig"]
