"""Views per second of a SimCLR training step, with and without making the views.

(a) the full step: index a device-resident uint8 batch, augment two views on the device,
    forward, NT-Xent, backward, optimizer step;
(b) the same step on views made in advance (augmentation taken out).
The ratio (a)/(b) says how much the augmentation costs: near 1 means the GPU (or CPU) spends
its time on the network, not on making views.

    python benchmarks/throughput.py --device cuda --encoder resnet18 --batch-size 512 --image-size 32
    python benchmarks/throughput.py --device cpu --encoder small_cnn --width 32 --batch-size 256 --image-size 28 --channels 1
"""
from __future__ import annotations

import argparse
import time

import torch

from contrastlab.augment import AugmentConfig, SimCLRAugment
from contrastlab.methods import SimCLR
from contrastlab.models import build_encoder
from contrastlab.optim import build_optimizer
from contrastlab.train import autocast_dtype, resolve_device, train_step


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
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    dtype = autocast_dtype(args.amp, device)
    torch.manual_seed(0)
    fmt = torch.channels_last if args.channels_last and device.type == "cuda" else torch.contiguous_format
    encoder = build_encoder(args.encoder, args.channels, width=args.width)
    method = SimCLR(encoder).to(device, memory_format=fmt)
    opt = build_optimizer("lars", method, lr=0.1, weight_decay=1e-6)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    augment = SimCLRAugment(AugmentConfig(size=args.image_size))
    images = torch.randint(0, 256, (args.dataset_size, args.channels, args.image_size, args.image_size),
                           dtype=torch.uint8, device=device)

    def train_on(views):
        train_step(method, [v.contiguous(memory_format=fmt) for v in views], opt, scaler, dtype)

    def batch(i):
        g = torch.Generator(device="cpu").manual_seed(i)
        return torch.randint(0, args.dataset_size, (args.batch_size,), generator=g).to(device)

    def full_step(i):
        train_on(augment.views(images[batch(i)], 2))

    premade = [augment.views(images[batch(i)], 2) for i in range(4)]

    def premade_step(i):
        train_on(premade[i % len(premade)])

    def augment_only(i):
        augment.views(images[batch(i)], 2)

    t_full = measure(full_step, args.steps, args.warmup, device)
    t_pre = measure(premade_step, args.steps, args.warmup, device)
    t_aug = measure(augment_only, args.steps, args.warmup, device)
    views = 2 * args.batch_size
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}; encoder {args.encoder} width {encoder.out_dim}-d output; batch {args.batch_size}; "
          f"{args.channels}x{args.image_size}x{args.image_size}; amp {dtype}; torch {torch.__version__}")
    print(f"(a) full step (augment + train):  {views / t_full:10.0f} views/s  ({t_full * 1000:.1f} ms/step)")
    print(f"(b) step on premade views:         {views / t_pre:10.0f} views/s  ({t_pre * 1000:.1f} ms/step)")
    print(f"    augmentation alone:            {views / t_aug:10.0f} views/s  ({t_aug * 1000:.1f} ms/step)")
    print(f"ratio (a)/(b): {t_pre / t_full:.3f}")


if __name__ == "__main__":
    main()
