"""Contrastive methods, one file each. `METHODS` maps a method's name to (class, config class)."""
from .base import Method
from .instdisc import InstDisc, InstDiscConfig
from .simclr import SimCLR, SimCLRConfig
from .supcon import SupCon, SupConConfig, Supervised, SupervisedConfig
from .swav import SwAV, SwAVConfig

METHODS: dict[str, tuple[type[Method], type]] = {
    "simclr": (SimCLR, SimCLRConfig),
    "instdisc": (InstDisc, InstDiscConfig),
    "swav": (SwAV, SwAVConfig),
    "supcon": (SupCon, SupConConfig),
    "supervised": (Supervised, SupervisedConfig),
}

__all__ = ["METHODS", "InstDisc", "InstDiscConfig", "Method", "SimCLR", "SimCLRConfig", "SupCon", "SupConConfig",
           "Supervised", "SupervisedConfig", "SwAV", "SwAVConfig"]
