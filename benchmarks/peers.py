"""Benchmark: the found network(s) against torchvision's LR-ASPP- and DeepLabV3-MobileNetV3-Large.

A thin script over ``nni_rspnet.benchmark`` (the ``latency`` section of ``nni-rspnet benchmark``):
parameters, MACs and CPU latency at 512x1024 with 2 threads, timed interleaved over many rounds;
medians and ratios to LR-ASPP. The found networks are read from ``<out>/search_*/arch.json``
(``nni-rspnet benchmark --only search`` writes them). Updates ``BENCHMARKS.md``.

    python benchmarks/peers.py --rounds 15
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/benchmark")
    p.add_argument("--markdown", default="BENCHMARKS.md")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"))
    args = p.parse_args(argv)

    import nni_rspnet  # noqa: F401  (patches torchvision)
    from nni_rspnet.benchmark import BenchmarkConfig, run_benchmark

    cfg = replace(BenchmarkConfig(out_dir=args.out, markdown=args.markdown), latency_rounds=args.rounds,
                  latency_threads=args.threads, latency_size=list(args.size))
    run_benchmark(cfg, ["latency"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
