"""The one renderer: ``BENCHMARKS.md`` from the stored section results (plain data), with the
product's goals and a note under each section that reads its numbers."""
from __future__ import annotations

import datetime as _dt
import os
import statistics
from typing import Any, Callable, Dict, List, Optional, Sequence

from nni_rspnet.space.model import SpaceConfig

from .common import ROOT, SECTIONS, BenchmarkConfig, results_path

# The product's goals, as the page checks them.
GOAL_RSP_COST = 0.55          # RSP depth 2 / depth 0 supernet step time and memory
GOAL_STEP_RATIO = 1.10        # TwoStageDarts / NNI's stock DARTS step time
GOAL_PARAMS = 0.87e6          # parameters of the found network
GOAL_LATENCY_RATIO = 0.5      # found network / LR-ASPP latency
GOAL_MIOU_MARGIN = 0.01       # searched >= best random + 1 mIoU point
PEER_NAMES = {"lraspp": "LR-ASPP-MobileNetV3-Large", "deeplabv3": "DeepLabV3-MobileNetV3-Large"}


def _g(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x / 1e9:.2f} G"


def _mean_spread(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.4f} (1 seed)"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} ({len(values)} seeds)"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_search(r: Dict[str, Any]) -> str:
    rows = []
    for name, run in r.get("runs", {}).items():
        ep = run["epochs"]
        per_epoch = (f"{run['limit_batches']} x {run['batch_size']} images" if run["limit_batches"]
                     else f"all ({run['num_train']})")
        miou = run.get("val_miou_supernet")
        rows.append([name, f"`{run['config']}`",
                     f"{run['num_train']}/{run['num_val']} at {run['image_size'][0]}x{run['image_size'][1]}",
                     f"{ep[0]}+{ep[1]}+{ep[2]}", per_epoch, f"{run['seconds'] / 60:.1f} min",
                     "n/a" if miou is None else f"{miou:.4f}", f"{run['params']:,}",
                     f"{run['macs'] / 1e6:.1f} M", f"`{run['arch_path']}`"])
    return _table(["search", "space", "built-in images (train/val)", "epochs (warm-up+stage 1+stage 2)",
                   "batches per epoch and split", "wall time", "supernet val mIoU", "found net params (11 classes)",
                   "MACs", "arch (under the results folder)"], rows)


def search_cost_markdown(table: Dict[str, Any], title: bool = False) -> str:
    """The tables of ``search_cost.measure``'s result: medians per configuration, then the ratios."""
    s = table["settings"]
    what = (f"{s['space']}, {s['input_size'][0]}x{s['input_size'][1]}, batch {s['batch']}, {s['device']}, "
            f"{s['threads']} thread(s), {s['rounds']} rounds x {s['steps']} steps")
    clock = "wall" if str(s["device"]).startswith("cuda") else "CPU"
    lines = [f"# Search cost benchmark ({what})" if title else f"Search cost of {what}.", "",
             f"| configuration | step time (s, {clock}) | step wall time (s) | peak memory (MiB) | "
             "saved for backward (MiB) |", "| --- | --- | --- | --- | --- |"]
    for name, m in table["runs"].items():
        lines.append(f"| {name} | {m['step_s']:.3f} | {m['wall_s']:.3f} | {m['peak_mib']:.1f} | {m['saved_mib']:.1f} |")
    lines += ["", "| ratio | value | goal | met |", "| --- | --- | --- | --- |"]
    for label, value in table["ratios"].items():
        goal = table["goals"][label]
        lines.append(f"| {label} | {value:.2f} | <= {goal:.2f} | {'yes' if value <= goal else 'no'} |")
    return "\n".join(lines) + "\n"


def render_search_cost(r: Dict[str, Any]) -> str:
    if not r.get("measured"):
        return f"Not measured: {r.get('why')}."
    return search_cost_markdown(r["table"]).strip()


def render_latency(r: Dict[str, Any]) -> str:
    rows = [[row["name"], f"{row['params'] / 1e6:.3f} M", _g(row["macs"]),
             f"{row['median_ms']:.1f} ({row['q1_ms']:.0f}..{row['q3_ms']:.0f})", f"{row['ratio']:.2f}x",
             f"{row['round_ratio']:.2f}x"] for row in r["rows"]]
    h, w = r["size"]
    return (f"{h}x{w} input, {r['classes']} classes, {r['device']}, {r['threads'] or 'default'} thread(s), "
            f"{r['rounds']} interleaved rounds after {r['warmup']} warm-up rounds.\n\n"
            + _table(["network", "params", "MACs", "latency ms, median (IQR)", "median / LR-ASPP median",
                      "median of per-round ratios"], rows))


def render_quality(r: Dict[str, Any]) -> str:
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for row in r["rows"]:
        groups.setdefault(row["name"], []).append(row)
    rows = []
    for name, runs in groups.items():
        vals = [x["val_miou"] for x in runs if x["val_miou"] is not None]
        losses = [x["val_loss"] for x in runs if x.get("val_loss") is not None]
        accs = [x["pixel_accuracy"] for x in runs if x.get("pixel_accuracy") is not None]
        rows.append([name, f"{runs[0]['params']:,}", f"{runs[0]['macs'] / 1e6:.1f} M", _mean_spread(vals),
                     ", ".join(f"{x['val_miou']:.4f}" for x in runs if x["val_miou"] is not None),
                     f"{statistics.mean(losses):.3f}" if losses else "n/a",
                     f"{statistics.mean(accs):.4f}" if accs else "n/a",
                     f"{statistics.mean(x['seconds'] for x in runs) / 60:.1f} min"])
    h, w = r["image_size"]
    return (f"Built-in data, {r['num_train']} train / {r['num_val']} val images at {h}x{w}, {r['epochs']} epochs, "
            f"{r['optimizer']} lr {r['lr']}, batch {r['batch_size']}, {r['threads']} thread(s) per run; "
            f"final-epoch val mIoU (11 classes).\n\n"
            + _table(["network", "params", "MACs", "val mIoU mean ± sd", "per seed", "val loss (mean)",
                      "pixel accuracy (mean)", "train time per run"], rows))


def render_demo(r: Dict[str, Any]) -> str:
    if not r.get("measured"):
        return f"Not measured: {r.get('why')}."
    rc = r.get("returncode")
    if r.get("ok"):
        state = "finished"
    elif r.get("why"):
        state = f"not finished: {r['why']}"
    elif rc is not None and rc < 0:
        last = next((line.split("\r")[-1].strip() for line in reversed(r.get("tail", [])) if "it/s" in line
                     or "s/it" in line), "")
        last = last[: last.rfind("]") + 1] if "]" in last else last  # a progress bar, without what followed
        state = f"not finished: stopped by signal {-rc} from outside" + (f"; last progress `{last[:90]}`" if last
                                                                           else "")
    else:
        state = f"FAILED (exit status {rc})"
    return _table(["command", "wall time", "result"], [[f"`{r['command']}`", f"{r['seconds'] / 60:.1f} min", state]])


def render_gpu(r: Dict[str, Any]) -> str:
    if not r.get("measured"):
        return f"Not measured: {r.get('why')}."
    parts = [f"On {r['gpu']}:", render_latency(r["latency"]), render_search_cost(r["search_cost"]),
             "Cityscapes space, 512x1024 crops:", render_search_cost(r["cityscapes_cost"])]
    p = r.get("projection")
    if p:
        w, s1, w2, s2 = r["search_epochs"]
        parts.append(f"Projected full Cityscapes search (2975 images, batch {r['batch_size']}, {p['steps_per_epoch']} "
                     f"steps per epoch, {w}+{s1} warm-up and stage-1 epochs at the stage-1 step time, {w2}+{s2} "
                     f"stage-2 epochs at the stage-2 step time): **{p['hours']:.1f} GPU hours** (data loading "
                     "not included).")
    return "\n\n".join(parts)


RENDERERS = {"search": render_search, "search_cost": render_search_cost, "latency": render_latency,
             "quality": render_quality, "demo": render_demo, "gpu": render_gpu}
TITLES = {"search": "The search behind \"the found network\"", "search_cost": "Search cost",
          "latency": "The found network against torchvision peers (CPU)",
          "quality": "Quality with an equal training budget", "demo": "The demo's wall time",
          "gpu": "GPU"}


def render_section(section: str, result: Dict[str, Any], results: Optional[Dict[str, Any]] = None) -> str:
    """One section as markdown (a heading, what was run, the table)."""
    text = RENDERERS[section](result)
    took = f", {result['section_seconds'] / 60:.1f} min" if result.get("section_seconds") else ""
    stamp = f"_Run {result.get('finished', '?')}{' (quick mode)' if result.get('quick') else ''}{took}._"
    return f"## {TITLES[section]}\n\n{stamp}\n\n{text}\n"


def goals(results: Dict[str, Any]) -> List[List[str]]:
    """The product's goals (``GOAL_*``), each with the measured value and whether it is met."""
    rows: List[List[str]] = []
    cost = results.get("search_cost", {})
    ratios = cost["table"]["ratios"] if cost.get("measured") else {}
    rsp = {k: v for k, v in ratios.items() if "depth 2 / depth 0" in k and "saved" not in k}
    worst = max(rsp.values()) if rsp else None
    rows.append(["RSP depth 2 / depth 0 supernet step time and peak memory <= 0.55x",
                 ", ".join(f"{k.split(',')[0]} {v:.2f}x" for k, v in rsp.items()) or "n/a",
                 _met(worst is not None and worst <= GOAL_RSP_COST, worst is not None)])
    mean = next((v for k, v in ratios.items() if k.startswith("step time, TwoStageDarts mean")), None)
    if mean is not None:
        rows.append([f"TwoStageDarts mean step time <= {GOAL_STEP_RATIO:.2f}x stock DARTS", f"{mean:.2f}x",
                     _met(mean <= GOAL_STEP_RATIO, True)])
    lat = results.get("latency")
    found = [row for row in lat["rows"] if row["name"].startswith("found")] if lat else []
    for row in found:
        rows.append([f"{row['name']}: <= 0.87 M parameters", f"{row['params'] / 1e6:.3f} M",
                     _met(row["params"] <= GOAL_PARAMS, True)])
        rows.append([f"{row['name']}: latency <= 0.5x LR-ASPP", f"{row['round_ratio']:.2f}x",
                     _met(row["round_ratio"] <= GOAL_LATENCY_RATIO, True)])
    if not found:
        rows.append(["found net <= 0.87 M parameters and <= 0.5x LR-ASPP latency", "n/a", "not measured"])
    floor = next((row for row in lat["rows"] if row["name"] == "cityscapes space, lightest"), None) if lat else None
    if floor:
        rows.append(["cityscapes space (not searched): can any architecture be <= 0.87 M parameters?",
                     f"its lightest is {floor['params'] / 1e6:.2f} M, {floor['round_ratio']:.2f}x LR-ASPP latency",
                     _met(floor["params"] <= GOAL_PARAMS, True) + (" (not reachable as configured)"
                                                                   if floor["params"] > GOAL_PARAMS else "")])
    q = results.get("quality")
    searched = [x["val_miou"] for x in q["rows"] if x["kind"] == "searched" and x["val_miou"] is not None] if q else []
    random = [x["val_miou"] for x in q["rows"] if x["kind"] == "random" and x["val_miou"] is not None] if q else []
    if searched and random:
        s, b = statistics.mean(searched), max(random)
        status = _met(s >= b + GOAL_MIOU_MARGIN, True)
        if max(searched + random) < 0.1:  # nothing beat the all-background level: no ranking possible
            status = "**inconclusive** (no network learned past all-background at this budget)"
        rows.append(["searched >= best random + 1 mIoU point (mean over seeds vs best random)",
                     f"{s:.4f} vs {b:.4f} ({(s - b) * 100:+.1f} points)", status])
    else:
        rows.append(["searched >= best random + 1 mIoU point", "n/a", "not measured"])
    return rows


def _met(ok: bool, measured: bool) -> str:
    return ("**met**" if ok else "**not met**") if measured else "not measured"


def render_page(results: Dict[str, Any], machine: Dict[str, Any], cfg: BenchmarkConfig) -> str:
    """The whole ``BENCHMARKS.md``: machine, date, goals, then every stored section."""
    v = machine["versions"]
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks", "",
        f"Written by `python -m benchmarks` on {date}. Regenerate with `python -m benchmarks` (all sections) or "
        "`python -m benchmarks --only latency,quality` (the others keep their stored numbers, "
        f"from `{os.path.relpath(results_path(cfg), os.getcwd())}`).", "",
        "## Machine", "",
        _table(["", ""], [["CPU", f"{machine['cpu']}, {machine['cores']} cores"],
                          ["memory", f"{machine['memory_gib']} GiB"], ["GPU", machine["gpu"] or "none"],
                          ["OS", machine["os"]],
                          ["versions", ", ".join(f"{k} {val}" for k, val in v.items())],
                          ["load average when written", str(machine["load_average"])]]), "",
        "The machine is shared: while these numbers were taken, other jobs ran on the same two cores, so "
        "absolute timings drift (single timings by about 25 %). Latencies are therefore timed interleaved "
        "(every network once per round, many rounds, in one process) and compared as ratios of medians.", "",
        "## Goals", "", _table(["goal", "measured", "status"], goals(results)), "",
    ]
    for section in SECTIONS:
        if section in results:
            lines.append(render_section(section, results[section], results))
            note = NOTES[section](results[section], results)
            if note:
                lines += [note, ""]
        else:
            lines += [f"## {TITLES[section]}", "", "Not run yet.", ""]
    return "\n".join(lines).rstrip() + "\n"


# --- notes under each section: what was run and how to read it, from the stored numbers ---------------

def _note_search(r: Dict[str, Any], results: Dict[str, Any]) -> str:
    run = r.get("runs", {}).get("tiny")
    if not run:
        return ""
    sc = SpaceConfig.from_yaml(os.path.join(ROOT, run["config"]))
    return (f"What was searched: the {sc.name} space (`{run['config']}`: {sc.layers} layers over resolutions "
            f"{', '.join('1/%d' % x for x in sc.resolutions)}, channels {sc.channels}, {sc.cell_nodes}-node cell, "
            f"RSP depth {sc.rsp_depth}) "
            f"on the built-in digits, both stages of `TwoStageDarts` through `run_search`, "
            f"{run['limit_batches'] or 'all'} batches of {run['batch_size']} per epoch and split, on this CPU in "
            f"{run['seconds'] / 60:.1f} min. This is the network the other sections call \"found\". The Cityscapes "
            "space (`search_spaces/cityscapes.yaml`) was not searched: its supernet (8 layers, 4 resolutions, up to 256 "
            "channels) does not fit a shared 2-core CPU in this session, and its lightest architecture is already "
            "several times the parameter goal (next sections), so a proxy search of it could not show the goal met.")


def _note_search_cost(r: Dict[str, Any], results: Dict[str, Any]) -> str:
    if not r.get("measured"):
        return ""
    ratios = r["table"]["ratios"]
    why = ""
    step = ratios.get("step time, RSP depth 2 / depth 0 (stage 1)")
    saved = ratios.get("saved activations, RSP depth 2 / depth 0 (stage 1)")
    if step is not None and saved is not None and step > GOAL_RSP_COST:
        why = (f" RSP at depth 2 keeps {saved:.2f}x of the activations saved for backward but {step:.2f}x of the "
               "step time. A likely reading (not profiled): the stem, path resamplers, RSP transitions and head are "
               "not split by RSP, and on a CPU at these small sizes the depth-2 supernet's many narrower ops cost "
               "per-op overhead rather than arithmetic, so halving the cell's channels does not halve the step.")
    return ("Step = one first-order DARTS iteration (an architecture step on a validation batch and a weight step "
            "on a training batch); each configuration runs in its own subprocess so its peak memory is its own, "
            "configurations are interleaved over rounds and medians compared. Peak memory on CPU is the rise of the "
            "process' peak RSS after the supernet was built, so it includes allocator slack; \"saved for backward\" "
            "(bytes of tensors autograd keeps) is exact and deterministic." + why)


def _note_latency(r: Dict[str, Any], results: Dict[str, Any]) -> str:
    rows = {row["name"]: row for row in r["rows"]}
    parts = [f"All networks are built with {r['classes']} output classes and no auxiliary heads, in eval mode under "
             "`torch.inference_mode()`, on one process; every round times each network once in turn. The last "
             "column (median over rounds of each round's ratio to LR-ASPP) is the number to trust on this shared "
             "machine; the IQR shows how much single timings drifted."]
    found = rows.get("found (tiny)")
    floor = rows.get("cityscapes space, lightest")
    if found:
        parts.append(f"\"found (tiny)\" is the searched architecture of the tiny space (the demo's space: "
                     f"channels 16/32/48, 1/4 to 1/16) with a {r['classes']}-class head: {found['params'] / 1e6:.3f} M "
                     "parameters. It meets the size goal because the tiny space is small, not because the search "
                     "steered it there; it was searched on 64x128 digits, not on Cityscapes, and its quality on "
                     "Cityscapes is unknown.")
    lraspp = rows.get(PEER_NAMES["lraspp"])
    if found and lraspp:
        mac_ratio = found["macs"] / lraspp["macs"]
        parts.append(f"\"found (tiny)\" does {mac_ratio:.2f}x LR-ASPP's MACs but takes {found['round_ratio']:.2f}x its "
                     "time: MACs do not predict CPU latency here. A likely cause (not profiled): the tiny space "
                     "runs its cells on 1/4-resolution maps (128x256 at this input) whose 16 channels RSP splits "
                     "into cells of 8 and 4 channels, where many small depthwise, pooling, split/concat and resampling ops are bound by "
                     "memory traffic and per-op overhead rather than arithmetic. The search's latency penalty "
                     "(`search.target_latency_ms` with a table from `nni-rspnet latency-table`) measures latency "
                     "directly and is the tool for this goal; it was not used in this run.")
    if floor:
        parts.append(f"The Cityscapes space as configured cannot meet the 0.87 M goal: its lightest architecture "
                     f"(every op `skip_connect`) has {floor['params'] / 1e6:.2f} M parameters, in the stem, RSP "
                     "transitions, path resamplers and head, which no cell or path choice removes. Meeting the goal "
                     "there needs narrower channels in `cityscapes.yaml` (parameters scale with the square of the "
                     "width), not a different search.")
    return "\n\n".join(parts)


def _note_quality(r: Dict[str, Any], results: Dict[str, Any]) -> str:
    parts = ["Every network is trained by the product's own `train_network` with the same data, epochs, optimiser, "
             "schedule and batch size; the mIoU is the final epoch's on the built-in validation split. "
             "\"± sd\" is the sample standard deviation over training seeds (weights and data order); random "
             "architectures are `random_arch(space, seed)` for seeds 0.., one training seed each. The search chose "
             "its paths on the same built-in validation split (generated from the same seed), which favours the "
             "searched architecture slightly."]
    search = results.get("search", {}).get("runs", {}).get("tiny")
    mious = [x["val_miou"] for x in r["rows"] if x.get("val_miou") is not None]
    if mious and max(mious) < 0.1:
        parts.append(f"At this budget ({r['epochs']} epochs of {r['num_train']} images, what fitted next to the "
                     "other sections on the shared CPU) no network got past the all-background level (about 0.08 "
                     "mIoU: background is about 87 % of the pixels): the mIoU columns cannot rank these networks "
                     "and the +1 point goal is untested, not failed. Validation loss still differs between networks "
                     "and is the only (weak) signal here"
                     + ("; pixel accuracy is the same for all, the share of background pixels."
                        if len({round(x.get("pixel_accuracy") or 0, 4) for x in r["rows"]}) == 1 else ".")
                     + (" For scale: `benchmarks/train_builtin.py` (a random tiny architecture, 2000 images, this "
                        "recipe: SGD lr 0.05 from `tiny.yaml`) reached only 0.096 mIoU after 6 epochs (15 min) on "
                        "this machine." if r.get("optimizer") == "sgd" else ""))
    # 11 classes, background ~ 87 % of pixels: predicting background everywhere scores about 0.08 mIoU
    if search and search.get("val_miou_supernet") is not None and search["val_miou_supernet"] < 0.1:
        parts.append(f"The search behind \"searched\" ended with a supernet validation mIoU of "
                     f"{search['val_miou_supernet']:.4f} after {sum(search['epochs'])} short epochs: the "
                     "all-background level. The supernet had not yet learned to segment digits, so its "
                     "architecture choices carry little signal and \"searched\" is close to one more random draw. "
                     "A longer search (the demo's, or `nni-rspnet search` with all batches) is the fair test of "
                     "the +1 point goal; it did not fit this session's shared CPU.")
    if not r.get("complete", True):
        parts.append(f"**Incomplete:** {len(r['rows'])} of {r.get('planned', '?')} planned runs had finished when this "
                     "page was written.")
    return "\n\n".join(parts)


def _note_demo(r: Dict[str, Any], results: Dict[str, Any]) -> str:
    if not r.get("measured"):
        return ""
    verdict = "met" if r.get("ok") and r["seconds"] <= 600 else "not met"
    text = f"The goal is at most 10 minutes on 2 CPU cores: {verdict}."
    if r.get("load_average"):
        text += (f" Load average when it ended: {r['load_average']} (other jobs on the same 2 cores make it "
                 "slower than on an idle machine).")
    sm = r.get("summary") or {}
    if sm.get("miou") is not None:
        h, w = sm.get("input_size", ["?", "?"])
        text += (f" Its summary: val mIoU {sm['miou']:.3f} after retraining, {sm.get('params', 0):,} parameters, "
                 f"{sm.get('macs', 0) / 1e6:.1f} M MACs at {h}x{w}; search {sm.get('seconds', {}).get('search', 0):.0f} s, "
                 f"retraining {sm.get('seconds', {}).get('train', 0):.0f} s.")
    return text


def _note_gpu(r: Dict[str, Any], results: Dict[str, Any]) -> str:
    if r.get("measured"):
        return ""
    return ("No GPU was available to this session, so the 1024x2048 latency table, the GPU supernet step time and "
            "the projected full Cityscapes search time are not given. `python -m benchmarks --only gpu` fills "
            "this section on a machine with CUDA.")


NOTES: Dict[str, Callable[[Dict[str, Any], Dict[str, Any]], str]] = {
    "search": _note_search, "search_cost": _note_search_cost, "latency": _note_latency, "quality": _note_quality,
    "demo": _note_demo, "gpu": _note_gpu}
