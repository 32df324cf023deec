"""The ``nni-rspnet`` command: one subcommand per step of the pipeline.

Each subcommand is a pair of functions, ``_args_<name>(parser)`` and ``_cmd_<name>(args)``, listed
in ``COMMANDS``; heavy imports happen inside ``_cmd_*`` so ``nni-rspnet --help`` stays fast. Errors a
user can fix (bad config, bad architecture, bad data) print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Dict, List, Optional, Tuple


def _add_config_args(p: argparse.ArgumentParser, default: Optional[str] = "search_spaces/tiny.yaml") -> None:
    p.add_argument("--config", default=default, help="YAML config (sections space/search/train/data)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set space.layers=3 (repeatable)")


# --- space -----------------------------------------------------------------------------------------

def _args_space(p: argparse.ArgumentParser) -> None:
    _add_config_args(p)
    p.add_argument("--input-size", nargs=2, type=int, default=[64, 128], metavar=("H", "W"),
                   help="input size for the MAC count of the sampled networks")
    p.add_argument("--samples", type=int, default=5, help="random architectures to sample for the cost range")
    p.add_argument("--seed", type=int, default=0)


def _cmd_space(args: argparse.Namespace) -> int:
    from .arch import build_network, random_arch, search_space_size_log10, space_spec
    from .cost import count_macs, count_params
    from .space import RSPNetSpace, SpaceConfig

    cfg = SpaceConfig.from_yaml(args.config, args.overrides)
    spec = space_spec(cfg)
    print(f"space {cfg.name!r} from {args.config}")
    print(f"  trellis: {cfg.layers} layers x resolutions {['1/%d' % r for r in cfg.resolutions]}, "
          f"channels {cfg.channels}, {cfg.paths_per_node} paths per node, RSP depth {cfg.rsp_depth}, "
          f"{cfg.cell_nodes}-node cell")
    print(f"\n{'label':<28} choices")
    for label, choice in spec.items():
        if choice.is_op:
            values = ", ".join(choice.names)
        else:
            values = f"{choice.n_chosen} of {choice.n_candidates} inputs ({choice.size} sets)"
        print(f"{label:<28} {values}")
    print(f"\nlabels: {len(spec)}   search space size: 10^{search_space_size_log10(cfg):.2f} architectures")
    supernet = RSPNetSpace(cfg)
    print(f"supernet parameters: {count_params(supernet):,}")
    h, w = args.input_size
    costs = []
    for i in range(args.samples):
        net = build_network(cfg, random_arch(cfg, args.seed + i))
        costs.append((count_params(net), count_macs(net, (h, w), cfg.in_channels)))
    if costs:
        params, macs = zip(*costs)
        print(f"{args.samples} sampled networks at {h}x{w}: parameters {min(params):,} .. {max(params):,}, "
              f"MACs {min(macs) / 1e6:.1f} M .. {max(macs) / 1e6:.1f} M")
    return 0


# --- export-search-space / report (nnictl experiments) ---------------------------------------------

def _args_export_search_space(p: argparse.ArgumentParser) -> None:
    _add_config_args(p)
    p.add_argument("--out", required=True, help="tuner search-space JSON to write, e.g. search_spaces/tiny_arch.json")
    p.add_argument("--extra", default=None, metavar="JSON",
                   help="further tuner parameters as a JSON object of SECTION.KEY -> {_type, _value}")


def _cmd_export_search_space(args: argparse.Namespace) -> int:
    import json

    from .config import ConfigError
    from .hpo import write_search_space
    from .space import SpaceConfig

    cfg = SpaceConfig.from_yaml(args.config, args.overrides)
    try:
        extra = json.loads(args.extra) if args.extra else None
    except json.JSONDecodeError as err:
        raise ConfigError(f"--extra: not valid JSON ({err})") from None
    space = write_search_space(cfg, args.out, extra)
    n_arch = sum("/" in k for k in space)
    print(f"wrote {args.out}: {n_arch} architecture labels and {len(space) - n_arch} other parameters "
          f"of space {cfg.name!r} from {args.config}")
    return 0


def _args_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help="experiment id (looked up in ~/nni-experiments) or experiment folder")
    p.add_argument("--out", default=None, help="folder for trials.md/csv, pareto.png, best_arch.json "
                                               "(default: <experiment folder>/report)")


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import make_report

    print(make_report(args.experiment, args.out).text())
    return 0


# --- registry --------------------------------------------------------------------------------------

COMMANDS: Dict[str, Tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "space": ("print the search space: labels, size, supernet and sampled-network costs", _args_space, _cmd_space),
    "export-search-space": ("write the NNI tuner search space (JSON) of a model space, for arch_hpo.yml",
                            _args_export_search_space, _cmd_export_search_space),
    "report": ("table, Pareto front and best architecture of an nnictl experiment", _args_report, _cmd_report),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nni-rspnet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_args, _) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def _quiet_known_warnings() -> None:
    """Silences third-party noise a user can do nothing about (see ENVIRONMENT.md)."""
    import warnings

    warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")
    warnings.filterwarnings("ignore", message=".*pkg_resources.*")
    warnings.filterwarnings("ignore", message=".*NLLLoss2d.*")
    warnings.filterwarnings("ignore", message="You should not run forward of this module directly")


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_known_warnings()
    from .arch import ArchError
    from .config import ConfigError

    try:
        return COMMANDS[args.command][2](args) or 0
    except (ConfigError, ArchError) as err:
        print(f"nni-rspnet {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
