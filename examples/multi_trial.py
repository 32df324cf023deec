"""Multi-trial NAS over the RSPNet space with a stock NNI strategy, through ``nni.retiarii``.

    python examples/multi_trial.py --strategy evolution --trials 3
    python examples/multi_trial.py --strategy random --trials 2 --num-train 32 --num-val 16 --image-size 32 64

Each trial is a separate process that NNI starts: it samples an architecture of ``RSPNetSpace``, trains
it with ``SegmentationModule`` on the built-in dataset and reports the validation mIoU. The web UI
shows the trials while it runs (http://127.0.0.1:PORT). At the end the best architecture is exported as
a dict, saved as ``arch.json`` and rebuilt as a plain network with ``build_network``.

NNI 2.10.1 pitfalls this script avoids (see NNI_NOTES.md, section 4):

* the final metric must not come from Lightning's sanity check (NNI keeps the first one):
  ``num_sanity_val_steps=0``, and ``SegmentationModule`` never reports during the sanity check;
* ``SupervisedLearningModule(export_onnx=None)`` exports ONNX in every trial and fails without
  onnxscript: ``SegmentationModule`` is a plain NNI ``LightningModule`` with no such export;
* ``RegularizedEvolution`` ignores ``max_trial_number`` and waits forever: ``cycles = trials``;
* the evaluator (datasets included) is pickled into every trial's parameters, 64 KB at most: the
  datasets are ``nni.trace``d classes built from a few plain values, never tensors;
* one multi-trial experiment per process, and ``exp.stop()`` in ``finally`` (``run`` leaves the NNI
  manager up);
* NNI's samplers may pick the same input twice for an input choice (``[1, 1]``), which cannot be
  built: ``model_filter=distinct_inputs`` drops such samples before they become failed trials;
* trial workers import torchvision before anything can patch it for CPU torch:
  ``retiarii_trial_command_params()`` starts them through ``nni_rspnet.nnictl.trial``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nni_rspnet  # noqa: F401  (first: makes torchvision importable on CPU torch)

import nni
import torch
from nni.retiarii.evaluator.pytorch import DataLoader, Lightning, Trainer
from nni.retiarii.experiment.pytorch import RetiariiExeConfig, RetiariiExperiment
from nni.retiarii.strategy import RegularizedEvolution, Random

from nni_rspnet import RSPNetSpace, RunConfig, build_network, describe, save_arch, validate
from nni_rspnet.fileio import write_json
from nni_rspnet.measure import count_macs, count_params
from nni_rspnet.nnictl.experiment import free_port, localhost_node_options
from nni_rspnet.nnictl.hpo import distinct_inputs
from nni_rspnet.nnictl.trial import retiarii_trial_command_params
from nni_rspnet.seg.builtin import BuiltinDigits
from nni_rspnet.seg.data import pad_collate
from nni_rspnet.seg.train import SegmentationModule


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="search_spaces/tiny.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--strategy", choices=["evolution", "random"], default="evolution")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--epochs", type=int, default=1, help="training epochs per trial")
    p.add_argument("--num-train", type=int, default=256)
    p.add_argument("--num-val", type=int, default=64)
    p.add_argument("--image-size", type=int, nargs=2, default=[64, 128], metavar=("H", "W"))
    p.add_argument("--port", type=int, default=0, help="web UI port (0: a free one)")
    p.add_argument("--out", default="runs/multi_trial")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg = RunConfig.load(args.config, args.overrides)  # the YAML's sections with the --set overrides
    space_cfg, data_cfg, train_cfg = cfg.space, cfg.data, cfg.train

    # Traced datasets travel as their constructor arguments (a few hundred bytes), not as data.
    def dataset(split: str, n: int, train: bool):
        return nni.trace(BuiltinDigits)(split, n, list(args.image_size), data_cfg.seed, data_cfg.max_digits,
                                        {**data_cfg.transform_args(train), "crop_size": None})

    train_loader = DataLoader(dataset("train", args.num_train, True), batch_size=data_cfg.batch_size, shuffle=True,
                              collate_fn=pad_collate, drop_last=True)
    val_loader = DataLoader(dataset("val", args.num_val, False), batch_size=data_cfg.val_batch_size,
                            collate_fn=pad_collate)
    module = SegmentationModule(space_cfg.num_classes, lr=train_cfg.lr, momentum=train_cfg.momentum,
                                weight_decay=train_cfg.weight_decay, optimizer=train_cfg.optimizer)
    trainer = Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, num_sanity_val_steps=0, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    evaluator = Lightning(module, trainer, train_dataloaders=train_loader, val_dataloaders=val_loader)

    if args.strategy == "evolution":
        population = max(2, min(4, args.trials))
        strategy = RegularizedEvolution(population_size=population, sample_size=population - 1,
                                        cycles=args.trials, dedup=True,  # cycles: or it never returns
                                        model_filter=distinct_inputs)
    else:
        strategy = Random(dedup=True, model_filter=distinct_inputs)

    model_space = RSPNetSpace(space_cfg.to_dict())  # a plain dict: the trials rebuild the space from it
    exp = RetiariiExperiment(model_space, evaluator, [], strategy)
    config = RetiariiExeConfig("local")
    config.experiment_name = f"rspnet-multi-trial-{args.strategy}"
    config.max_trial_number = args.trials
    config.trial_concurrency = 1
    config.trial_gpu_number = 0
    config.training_service.use_active_gpu = False
    config.experiment_working_directory = str(out / "nni-experiments")
    config.execution_engine = "py"
    config._trial_command_params = retiarii_trial_command_params()
    # NNI's manager listens on every interface unless told otherwise: keep it on 127.0.0.1.
    os.environ["NODE_OPTIONS"] = " ".join(filter(None, [os.environ.get("NODE_OPTIONS"),
                                                        localhost_node_options(out)]))
    port = args.port or free_port()
    print(f"web UI: http://127.0.0.1:{port}", flush=True)
    try:
        exp.run(config, port)
        exp_id = exp.id
        top = exp.export_top_models(top_k=1, formatter="dict")
    finally:
        exp.stop()
    if not top:
        print("no trial succeeded; see the trial logs under", out / "nni-experiments", file=sys.stderr)
        return 1
    arch = validate(top[0], space_cfg, source="export_top_models")
    save_arch(arch, out / "arch.json")
    net = build_network(space_cfg, arch)
    h, w = args.image_size
    with torch.no_grad():
        shape = tuple(net(torch.zeros(1, space_cfg.in_channels, h, w)).shape)
    summary = {"experiment_id": exp_id, "trials": args.trials, "strategy": args.strategy, "arch": arch,
               "params": count_params(net), "macs": count_macs(net, (h, w), space_cfg.in_channels),
               "output_shape": list(shape)}
    write_json(out / "summary.json", summary)
    print(describe(arch, space_cfg))
    print(f"best architecture -> {out / 'arch.json'}; rebuilt: {summary['params']:,} parameters, "
          f"{summary['macs'] / 1e6:.1f} M MACs, output {shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
