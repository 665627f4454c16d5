"""Views per second of a SimCLR training step, with and without making the views.

(a) the full step: index a device-resident uint8 batch, augment the views on the device,
    forward, loss, backward, optimizer step;
(b) the same step on views made in advance (augmentation taken out).
The ratio (a)/(b) says how much the augmentation costs: near 1 means the GPU (or CPU) spends
its time on the network, not on making views. ``--n-small 6 --small-size 16`` measures
multi-crop instead (SwAV, 2 large + 6 small views), ``--threads`` sets torch's CPU threads,
``--json PATH`` also writes the figures as JSON.

    python benchmarks/throughput.py --device cuda --encoder resnet18 --batch-size 512 --image-size 32
    python benchmarks/throughput.py --device cpu --encoder small_cnn --width 32 --batch-size 256 --image-size 28 --channels 1
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from contrastlab.augment import AugmentConfig, SimCLRAugment
from contrastlab.methods import SimCLR, SwAV, SwAVConfig
from contrastlab.models import build_encoder
from contrastlab.multicrop import MultiCropAugment
from contrastlab.optim import build_optimizer
from contrastlab.train import autocast_dtype, resolve_device, train_step

AMPS = ("auto", "bf16", "fp16", "off")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step, n_steps, warmup, device) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls."""
    for i in range(warmup):
        step(i)
    _sync(device)
    tic = time.perf_counter()
    for i in range(n_steps):
        step(i)
    _sync(device)
    return (time.perf_counter() - tic) / n_steps


def step_rates(*, device="auto", encoder="resnet18", width=None, batch_size=512, image_size=32, channels=3,
               dataset_size=10000, steps=20, warmup=5, amp="auto", channels_last=True, n_small=0,
               small_size=None, threads=None) -> dict:
    """Time the full step, the step on premade views and the augmentation alone; return the figures.

    With ``n_small`` = 0 the method is SimCLR on two views; with ``n_small`` > 0 it is SwAV on
    2 large views of ``image_size`` and ``n_small`` small ones of ``small_size`` (multi-crop).
    ``threads`` (None: unchanged) sets ``torch.set_num_threads`` for the measurement.

    Returns:
        dict: the settings, ``views`` per step, ``full_views_per_s``, ``premade_views_per_s``,
        ``augment_views_per_s``, ``ms_full``, ``ms_premade`` and ``ratio`` = full / premade rate.
    """
    if isinstance(n_small, bool) or not isinstance(n_small, int) or n_small < 0:
        raise ValueError(f"n_small must be an int >= 0, got {n_small!r}")
    if threads is not None:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    dtype = autocast_dtype(amp, dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    enc = build_encoder(encoder, channels, width=width)
    config = AugmentConfig(size=image_size)
    if n_small:
        method = SwAV(enc, SwAVConfig(n_small=n_small))
        augment = MultiCropAugment(config, n_small=n_small, small_size=small_size)
    else:
        method, augment = SimCLR(enc), SimCLRAugment(config)
    n_views = 2 + n_small
    method = method.to(dev, memory_format=fmt)
    opt = build_optimizer("lars", method, lr=0.1, weight_decay=1e-6)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    images = torch.randint(0, 256, (dataset_size, channels, image_size, image_size), dtype=torch.uint8, device=dev)

    def train_on(views):
        train_step(method, [v.contiguous(memory_format=fmt) for v in views], opt, scaler, dtype)

    def batch(i):
        g = torch.Generator(device="cpu").manual_seed(i)
        return torch.randint(0, dataset_size, (batch_size,), generator=g).to(dev)

    def full_step(i):
        train_on(augment.views(images[batch(i)], n_views))

    premade = [augment.views(images[batch(i)], n_views) for i in range(4)]

    def premade_step(i):
        train_on(premade[i % len(premade)])

    def augment_only(i):
        augment.views(images[batch(i)], n_views)

    t_full = measure(full_step, steps, warmup, dev)
    t_pre = measure(premade_step, steps, warmup, dev)
    t_aug = measure(augment_only, steps, warmup, dev)
    views = n_views * batch_size
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    return {"device": name, "threads": torch.get_num_threads(), "method": method.name, "encoder": encoder,
            "out_dim": enc.out_dim, "batch_size": batch_size, "channels": channels, "image_size": image_size,
            "n_small": n_small, "small_size": augment.small_config.size if n_small else None,
            "amp": {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32"), "channels_last": channels_last,
            "torch": torch.__version__, "views": views, "steps": steps, "warmup": warmup,
            "full_views_per_s": views / t_full, "premade_views_per_s": views / t_pre,
            "augment_views_per_s": views / t_aug, "ms_full": t_full * 1000, "ms_premade": t_pre * 1000,
            "ratio": t_pre / t_full}


def format_rates(r: dict) -> str:
    """The figures of `step_rates` as the lines this script prints."""
    crops = f"2x{r['image_size']} + {r['n_small']}x{r['small_size']}" if r["n_small"] else f"2x{r['image_size']}"
    return "\n".join([
        f"device: {r['device']} ({r['threads']} threads); {r['method']}, encoder {r['encoder']} "
        f"{r['out_dim']}-d output; batch {r['batch_size']}; {r['channels']} channels, views {crops}; "
        f"amp {r['amp']}; channels_last {r['channels_last']}; torch {r['torch']}",
        f"(a) full step (augment + train):  {r['full_views_per_s']:10.0f} views/s  ({r['ms_full']:.1f} ms/step)",
        f"(b) step on premade views:         {r['premade_views_per_s']:10.0f} views/s  ({r['ms_premade']:.1f} ms/step)",
        f"    augmentation alone:            {r['augment_views_per_s']:10.0f} views/s",
        f"ratio (a)/(b): {r['ratio']:.3f}"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--encoder", default="resnet18", choices=["resnet18", "small_cnn"])
    p.add_argument("--width", type=float, default=None, help="encoder width (default: the encoder's)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--dataset-size", type=int, default=10000, help="images kept on the device")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--amp", default="auto", choices=AMPS)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--n-small", type=int, default=0, help="small multi-crop views (SwAV); 0: SimCLR, two views")
    p.add_argument("--small-size", type=int, default=None, help="side of the small views (default 4/7 of the large)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    try:
        rates = step_rates(device=args.device, encoder=args.encoder, width=args.width, batch_size=args.batch_size,
                           image_size=args.image_size, channels=args.channels, dataset_size=args.dataset_size,
                           steps=args.steps, warmup=args.warmup, amp=args.amp, channels_last=args.channels_last,
                           n_small=args.n_small, small_size=args.small_size, threads=args.threads)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print(format_rates(rates))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rates, indent=1) + "\n")


if __name__ == "__main__":
    main()
