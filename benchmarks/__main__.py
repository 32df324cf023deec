"""``python -m benchmarks``: runs the benchmark sections and writes ``BENCHMARKS.md`` (see ``__init__.py``)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Sequence

from nni_rspnet.fileio import atomic_write_text

from . import demo, fidelity, gpu, latency, quality, search, search_cost
from .common import SECTIONS, BenchmarkConfig, load_results, machine_info, store_result
from .render import render_page, render_section

RUNNERS: Dict[str, Callable[..., Dict[str, Any]]] = {
    "search": search.run, "search_cost": search_cost.run, "latency": latency.run, "fidelity": fidelity.run,
    "quality": quality.run,
    "demo": demo.run, "gpu": gpu.run}


def run_benchmark(cfg: BenchmarkConfig, sections: Sequence[str] = SECTIONS,
                  log: Callable[[str], None] = print) -> str:
    """Runs ``sections`` in order, stores each result as it finishes, writes and returns the page.

    Raises:
        ValueError: an unknown section name.
    """
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown benchmark section(s) {unknown}; expected some of {list(SECTIONS)}")
    os.makedirs(cfg.out_dir, exist_ok=True)
    for section in sections:
        start = time.time()
        result = RUNNERS[section](cfg, log=log)
        result["section_seconds"] = round(time.time() - start, 1)
        store_result(cfg, section, result)
        log(render_section(section, result, load_results(cfg)))
    page = render_page(load_results(cfg), machine_info(), cfg)
    atomic_write_text(cfg.markdown, page)
    log(f"wrote {cfg.markdown}")
    return page


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--only", default=None, metavar="SECTIONS",
                   help=f"comma-separated sections among {','.join(SECTIONS)} (default: all)")
    p.add_argument("--quick", action="store_true", help="smoke-test sizes (tiny data, one epoch, few rounds)")
    p.add_argument("--out", default="runs/benchmark", help="folder of results.json, searches and training runs")
    p.add_argument("--markdown", default="BENCHMARKS.md", help="the page to write")
    p.add_argument("--quality-epochs", type=int, default=None,
                   help="training epochs of every quality run (default: the config's train.epochs)")
    p.add_argument("--jobs", type=int, default=1, help="quality jobs at once (processes with one thread each)")
    p.add_argument("--latency-rounds", type=int, default=None, help="interleaved timing rounds")
    p.add_argument("--render-only", action="store_true", help="rewrite the page from the stored results, run nothing")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = BenchmarkConfig(out_dir=args.out, markdown=args.markdown)
    if args.quick:
        cfg = cfg.quick_version()
    if args.quality_epochs is not None:
        cfg = replace(cfg, quality_epochs=args.quality_epochs)
    if args.jobs > 1:
        cfg = replace(cfg, quality_jobs=args.jobs)
    if args.latency_rounds is not None:
        cfg = replace(cfg, latency_rounds=args.latency_rounds)
    sections = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else list(SECTIONS)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        print(f"python -m benchmarks: error: --only: unknown section(s) {unknown}; expected some of "
              f"{list(SECTIONS)}", file=sys.stderr)
        return 2
    run_benchmark(cfg, [] if args.render_only else sections)
    return 0


if __name__ == "__main__":
    sys.exit(main())
