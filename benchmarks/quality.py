"""Benchmark: quality on the built-in data with an equal training budget.

A thin script over ``nni_rspnet.benchmark`` (the ``quality`` section of ``nni-rspnet benchmark``):
the searched tiny architecture (``<out>/search_tiny/arch.json``), random architectures of the same
space and LR-ASPP-MobileNetV3-Large from scratch, each trained by ``train.train_network`` with the
same data, epochs and optimiser; mIoU mean and spread over seeds. Updates ``BENCHMARKS.md``.

    python benchmarks/quality.py --epochs 5 --random 5 --searched-seeds 2
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/benchmark")
    p.add_argument("--markdown", default="BENCHMARKS.md")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--random", type=int, default=5, help="random architectures")
    p.add_argument("--searched-seeds", type=int, default=2)
    p.add_argument("--peer-seeds", type=int, default=1)
    p.add_argument("--num-train", type=int, default=1000)
    p.add_argument("--num-val", type=int, default=200)
    p.add_argument("--image-size", type=int, nargs=2, default=[64, 128], metavar=("H", "W"))
    p.add_argument("--train", dest="train", action="append", default=[], metavar="KEY=VALUE",
                   help="change a train-section value for every run, e.g. --train optimizer=adamw (repeatable)")
    args = p.parse_args(argv)

    import nni_rspnet  # noqa: F401  (patches torchvision)
    import yaml

    from nni_rspnet.benchmark import BenchmarkConfig, run_benchmark

    train = {}
    for item in args.train:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--train {item!r}: expected KEY=VALUE")
        train[key] = yaml.safe_load(value)

    cfg = replace(BenchmarkConfig(out_dir=args.out, markdown=args.markdown), quality_epochs=args.epochs,
                  quality_random=args.random, quality_searched_seeds=args.searched_seeds,
                  quality_peer_seeds=args.peer_seeds, data_train=args.num_train, data_val=args.num_val,
                  image_size=list(args.image_size), train_overrides=train)
    run_benchmark(cfg, ["quality"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
