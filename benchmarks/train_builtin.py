"""Benchmark: train a random fixed architecture of the tiny space on the built-in data on CPU.

Prints the parameters, MACs, the mIoU reached on the built-in val split and the wall time, and writes
the run (history, curves, model.pt, iou.md) to ``--out``. Not a test: the numbers depend on the
machine (note them, with the machine's load).

    python benchmarks/train_builtin.py --epochs 8 --threads 1
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=os.path.join(ROOT, "search_spaces", "tiny.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--seed", type=int, default=0, help="seed of random_arch")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on shared cores)")
    p.add_argument("--max-minutes", type=float, default=15.0, help="hard stop for the training")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_train_builtin"))
    args = p.parse_args(argv)

    # Imported here: --help stays fast.
    from nni_rspnet.config import RunConfig
    from nni_rspnet.fileio import write_json
    from nni_rspnet.measure import count_macs, count_params
    from nni_rspnet.seg.data import build_datasets
    from nni_rspnet.seg.evaluate import evaluate_network
    from nni_rspnet.seg.train import train_network
    from nni_rspnet.space.arch import build_network, random_arch, save_arch

    cfg = RunConfig.load(args.config, [*args.overrides, f"train.epochs={args.epochs}", f"train.threads={args.threads}"])
    space, data, train = cfg.space, cfg.data, cfg.train
    arch = random_arch(space, args.seed)
    os.makedirs(args.out, exist_ok=True)
    save_arch(arch, os.path.join(args.out, "arch.json"))
    net = build_network(space, arch)
    h, w = data.image_size
    params, macs = count_params(net), count_macs(net, (h, w), space.in_channels)
    print(f"random_arch(seed={args.seed}) of space {space.name!r}: {params:,} parameters, "
          f"{macs / 1e6:.1f} M MACs at {h}x{w}")
    print(f"data: {data.num_train} train / {data.num_val} val built-in images; {args.epochs} epochs, "
          f"{args.threads} thread(s)")
    datasets = build_datasets(data, space.num_classes)
    start = time.time()
    result = train_network(net, data, train, args.out, space=space.to_dict(), arch=arch, progress=False,
                           max_time_s=args.max_minutes * 60, datasets=datasets)
    seconds = time.time() - start
    report = evaluate_network(net, datasets.val, datasets.classes, os.path.join(args.out, "eval"), progress=False,
                              mean=data.mean, std=data.std)
    summary = {"params": params, "macs": macs, "epochs": result["epochs"], "train_seconds": round(seconds, 1),
               "val_miou": report["miou"], "pixel_accuracy": report["pixel_accuracy"],
               "per_class": report["per_class"], "history": result["history"]}
    write_json(os.path.join(args.out, "benchmark.json"), summary, indent=1)
    for row in result["history"]:
        print(f"  epoch {row['epoch'] + 1:2d}: train loss {row['train_loss']:.3f}  val loss {row['val_loss']:.3f}  "
              f"val mIoU {row['val_miou']:.4f}  ({row['seconds']:.0f} s)")
    print(f"val mIoU {report['miou']:.4f} (pixel accuracy {report['pixel_accuracy']:.4f}) after "
          f"{result['epochs']} epochs, {seconds / 60:.1f} min of training")
    return 0


if __name__ == "__main__":
    sys.exit(main())
