"""Contrastive methods, one file each. `METHODS` maps a method's name to (class, config class)."""
from .align_uniform import AlignUniform, AlignUniformConfig
from .base import Method
from .byol import BYOL, BYOLConfig
from .cpc import CPC, CPCConfig
from .instdisc import InstDisc, InstDiscConfig
from .moco import MoCo, MoCoConfig
from .simclr import SimCLR, SimCLRConfig
from .supcon import SupCon, SupConConfig, Supervised, SupervisedConfig
from .swav import SwAV, SwAVConfig

METHODS: dict[str, tuple[type[Method], type]] = {
    "simclr": (SimCLR, SimCLRConfig),
    "instdisc": (InstDisc, InstDiscConfig),
    "cpc": (CPC, CPCConfig),
    "moco": (MoCo, MoCoConfig),
    "byol": (BYOL, BYOLConfig),
    "swav": (SwAV, SwAVConfig),
    "supcon": (SupCon, SupConConfig),
    "supervised": (Supervised, SupervisedConfig),
    "align_uniform": (AlignUniform, AlignUniformConfig),
}

__all__ = [
    "BYOL",
    "CPC",
    "METHODS",
    "AlignUniform",
    "AlignUniformConfig",
    "BYOLConfig",
    "CPCConfig",
    "InstDisc",
    "InstDiscConfig",
    "Method",
    "MoCo",
    "MoCoConfig",
    "SimCLR",
    "SimCLRConfig",
    "SupCon",
    "SupConConfig",
    "Supervised",
    "SupervisedConfig",
    "SwAV",
    "SwAVConfig",
]
