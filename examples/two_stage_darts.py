"""The two-stage RSPNet search through NNI's Python API: ``RetiariiExperiment`` with ``TwoStageDarts``.

    python examples/two_stage_darts.py
    python examples/two_stage_darts.py --set search.stage1_epochs=1 --set data.num_train=64 --out runs/darts

A one-shot search runs inside this process (no NNI manager, no web UI; run it from an nnictl trial,
``experiment_configs/macro.yml``, to see searches in the web UI). Stage 1 searches the cell with every
macro path on; stage 2 freezes the cell and searches the paths with path attention. The export is one
flat dict, NNI's own format, which ``fixed_arch`` turns into a plain network of the same classes.
``nni-rspnet search`` does the same with checkpoints and resume (``nni_rspnet.search.run_search``).
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import nni_rspnet  # noqa: F401  (first: makes torchvision importable on CPU torch)

import torch
from nni.retiarii import fixed_arch
from nni.retiarii.evaluator.pytorch import Lightning, Trainer
from nni.retiarii.experiment.pytorch import RetiariiExeConfig, RetiariiExperiment

from nni_rspnet import RSPNetSpace, RunConfig, TwoStageDarts, build_network, describe, save_arch
from nni_rspnet.search.driver import split_for_search
from nni_rspnet.seg.data import build_datasets, build_loaders
from nni_rspnet.seg.train import SegmentationModule


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="search_spaces/tiny.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--out", default="runs/two_stage_darts")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = RunConfig.load(args.config, args.overrides)  # the YAML's sections with the --set overrides
    space_cfg, data_cfg, search = cfg.space, cfg.data, cfg.search
    torch.manual_seed(search.seed)
    if search.threads:
        torch.set_num_threads(search.threads)

    train_set = build_datasets(data_cfg, space_cfg.num_classes).train  # val stays held out for the result
    weights_set, arch_set = split_for_search(train_set, search.arch_fraction, search.seed)  # disjoint halves
    train_loader, val_loader = build_loaders(data_cfg, weights_set, arch_set)  # weights / architecture
    limit = search.limit_batches or None
    trainer = Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_train_batches=limit,
                      limit_val_batches=limit)  # a template: each stage makes its own Trainer from it
    module = SegmentationModule(space_cfg.num_classes, lr=search.lr, momentum=search.momentum,
                                weight_decay=search.weight_decay)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # untraced DataLoaders are fine in one-shot mode
        evaluator = Lightning(module, trainer, train_dataloaders=train_loader, val_dataloaders=val_loader)

    strategy = TwoStageDarts.from_config(  # epochs, architecture optimiser, temperatures of the search section
        search, epoch_hook=lambda r: print(f"stage {r['stage']} epoch {r['epoch']}/{r['epochs']}: "
                                           f"val mIoU {r['metrics'].get('val_miou', float('nan')):.4f}", flush=True))
    exp = RetiariiExperiment(RSPNetSpace(space_cfg), evaluator, [], strategy)
    config = RetiariiExeConfig()
    config.execution_engine = "oneshot"
    exp.run(config)

    arch = exp.export_top_models(formatter="dict")[0]
    save_arch(arch, out / "arch.json", space_cfg)
    (out / "probs.json").write_text(json.dumps(strategy.probs, indent=2, sort_keys=True) + "\n")
    print(describe(arch, space_cfg))

    with fixed_arch(arch):  # the NNI way; build_network(space_cfg, arch) does the same on the plain class
        net = RSPNetSpace(space_cfg)
    plain = build_network(space_cfg, arch)
    plain.load_state_dict(net.state_dict())
    scripted = torch.jit.script(plain.eval())  # no NNI choice module is left: it scripts
    h, w = data_cfg.image_size
    x = torch.randn(1, space_cfg.in_channels, h, w)
    with torch.no_grad():
        diff = (scripted(x) - net.eval()(x)).abs().max().item()
    print(f"arch -> {out / 'arch.json'}; fixed network output {tuple(net(x).shape)}, "
          f"TorchScript matches to {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
