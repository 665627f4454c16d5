"""contrastlab: contrastive self-supervised learning, from the papers to runnable code.

The public API, module by module:

- `contrastlab.data`: ``load_dataset(name, split)`` -> uint8 images (N, C, H, W), int64 labels; `IndexBatches`.
- `contrastlab.augment`: batched per-sample augmentations on the training device; `SimCLRAugment`.
- `contrastlab.models`: `SmallCNN`, ``resnet18`` (CIFAR stem), `ProjectionHead`.
- `contrastlab.losses`: pure loss functions: ``nt_xent``, ``info_nce``, ``nt_logistic``, ``margin_triplet``,
  ``supcon``, ``byol``, ``sinkhorn``, ``swav``.
- `contrastlab.methods`: one class per method (SimCLR, InstDisc, CPC, MoCo, BYOL, SwAV, SupCon, the
  cross-entropy baseline, AlignUniform), each with a config dataclass; `METHODS` names them.
- `contrastlab.train`: ``fit()``, checkpoints, `TrainConfig`.
- `contrastlab.metrics`: kNN, linear probe, alignment and uniformity.
- `contrastlab.experiments`: ``run(ExperimentConfig(...))`` -> cached result record.
- `contrastlab.stats`: the book's verdict rule, ``compare_arms(a, b, paired=...)`` (95% Welch or paired interval).
- `contrastlab.scorecard`: the measuring instrument and every claim the book decides (``python -m contrastlab scorecard``).
- `contrastlab.report`: ``compare(runs)`` and its Markdown table (``python -m contrastlab compare``).
- `contrastlab.analysis`: InfoNCE as a bound on mutual information; gradient weights of negatives.
- `contrastlab.plots`: figures from result records (imports matplotlib, which ``import contrastlab`` does not).

Importing contrastlab does no work: no downloads, no global settings.
"""
__version__ = "0.1.0"

from . import augment, data, losses, metrics, models
from .augment import AugmentConfig, SimCLRAugment
from .data import IndexBatches, load_dataset
from .losses import nt_xent
from .methods import METHODS, SimCLR, SimCLRConfig
from .train import TrainConfig, fit, load_checkpoint

__all__ = [
    "METHODS",
    "AugmentConfig",
    "IndexBatches",
    "SimCLR",
    "SimCLRAugment",
    "SimCLRConfig",
    "TrainConfig",
    "__version__",
    "augment",
    "data",
    "fit",
    "load_checkpoint",
    "load_dataset",
    "losses",
    "metrics",
    "models",
    "nt_xent",
]
