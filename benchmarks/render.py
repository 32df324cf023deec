"""The one renderer: ``BENCHMARKS.md`` from the stored section results (plain data), with the
product's goals and a note under each section that reads its numbers."""
from __future__ import annotations

import datetime as _dt
import os
import statistics
from typing import Any, Callable, Dict, List, Optional, Sequence

from nni_rspnet.search.rank_check import agreement_line, interval_text, reliance_line
from nni_rspnet.space.model import SpaceConfig

from .common import QUALITY_GROUPS, ROOT, SECTIONS, BenchmarkConfig, results_path

# The product's goals, as the page checks them.
GOAL_RSP_COST = 0.55          # the default cheap search / the full-channel supernet: step time and memory
GOAL_STEP_RATIO = 1.10        # TwoStageDarts / NNI's stock DARTS step time
GOAL_PARAMS = 0.87e6          # parameters of the found network
GOAL_LATENCY_RATIO = 0.5      # found network / LR-ASPP latency
GOAL_MIOU_MARGIN = 0.01       # searched >= best random + 1 mIoU point
GOAL_SPEARMAN = 0.9           # cost model: predicted vs measured latency, rank correlation
GOAL_REL_ERROR = 0.15         # cost model: median relative error of the predicted latency
GOAL_SEARCH_GPU_HOURS = 24.0  # a full Cityscapes search (both stages) on one GPU (papers: 3 to 10 GPU-days)
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
    if table["ratios"]:  # none when only the default's two configurations were timed
        lines += ["", "| ratio | value | goal | met |", "| --- | --- | --- | --- |"]
    for label, value in table["ratios"].items():
        goal = table["goals"][label]
        lines.append(f"| {label} | {value:.2f} | <= {goal:.2f} | {'yes' if value <= goal else 'no'} |")
    return "\n".join(lines) + "\n"


def render_search_cost(r: Dict[str, Any]) -> str:
    if not r.get("measured"):
        return f"Not measured: {r.get('why')}."
    return search_cost_markdown(r["table"]).strip()


def render_latency_rows(r: Dict[str, Any]) -> str:
    """One eager table (the GPU section's format: rows with params, MACs, median and ratios)."""
    rows = [[row["name"], f"{row['params'] / 1e6:.3f} M", _g(row["macs"]),
             f"{row['median_ms']:.1f} ({row['q1_ms']:.0f}..{row['q3_ms']:.0f})", f"{row['ratio']:.2f}x",
             f"{row['round_ratio']:.2f}x"] for row in r["rows"]]
    h, w = r["size"]
    return (f"{h}x{w} input, {r['classes']} classes, {r['device']}, {r['threads'] or 'default'} thread(s), "
            f"{r['rounds']} interleaved rounds after {r['warmup']} warm-up rounds.\n\n"
            + _table(["network", "params", "MACs", "latency ms, median (IQR)", "median / LR-ASPP median",
                      "median of per-round ratios"], rows))


RUNTIME_TITLES = {"eager": "PyTorch eager", "torchscript": "TorchScript (frozen)", "onnxruntime": "onnxruntime",
                  "onnxruntime_int8": "onnxruntime int8 (static quantisation, calibrated on 4 random images)"}


def _setting_title(s: Dict[str, Any]) -> str:
    clock = "CPU time of the timing thread" if s["clock"] == "cpu" else "wall time"
    return f"{_n(s['threads'], 'thread')}, {clock}, {s['rounds']} interleaved rounds after {s['warmup']} warm-up"


def found_light_rows(r: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The found networks of the light Cityscapes space (not the tiny space's) in a latency result."""
    return [n for n in r.get("networks", []) if n.get("kind") == "found" and n["name"] != "found (tiny)"]


def render_latency(r: Dict[str, Any]) -> str:
    """One table per timing setting and runtime: params, MACs, median ms (IQR), per-round ratio to LR-ASPP in
    the same runtime and to LR-ASPP in eager PyTorch; then the profiles."""
    if "settings" not in r:
        return render_latency_rows(r)
    info = {n["name"]: n for n in r["networks"]}
    h, w = r["size"]
    parts = [f"{h}x{w} input, {r['classes']} classes, batch 1, CPU. Every (network, runtime) pair is timed once per "
             "round, in turn, in one process; ratios are medians over rounds of each round's ratio."]
    for s in r["settings"]:
        runtimes = list(dict.fromkeys(row["runtime"] for row in s["rows"]))
        for runtime in runtimes:
            rows = []
            for row in (x for x in s["rows"] if x["runtime"] == runtime):
                n = info.get(row["name"], {})
                rows.append([row["name"], f"{n.get('params', 0) / 1e6:.3f} M", _g(n.get("macs")),
                             f"{row['median_ms']:.1f} ({row['q1_ms']:.0f}..{row['q3_ms']:.0f})",
                             f"**{row['round_ratio']:.2f}x**", f"{row['vs_lraspp_eager']:.2f}x"])
            parts.append(f"### {RUNTIME_TITLES.get(runtime, runtime)}; {_setting_title(s)}\n\n"
                         + _table(["network", "params", "MACs", "latency ms, median (IQR)",
                                   "/ LR-ASPP, same runtime", "/ LR-ASPP eager"], rows))
    for name, top in (r.get("profiles") or {}).items():
        rows = [[f"`{p['op']}`", p["calls"], f"{p['self_ms']:.1f}", f"{p['share']:.0%}"] for p in top]
        parts.append(f"Top ops of {name} (eager, torch profiler, self CPU time of one forward pass):\n\n"
                     + _table(["op", "calls", "self ms", "share"], rows))
    for name, top in (r.get("profiles_onnxruntime") or {}).items():
        rows = [[f"`{p['op']}`", p["calls"], f"{p['self_ms']:.1f}", f"{p['share']:.0%}"] for p in top]
        parts.append(f"Top op types of {name} in onnxruntime (its profiler, after graph optimisation, 1 thread, "
                     "kernel time per run):\n\n" + _table(["op type", "calls", "ms per run", "share"], rows))
    return "\n\n".join(parts)


def latency_goal_rows(r: Dict[str, Any]) -> List[List[str]]:
    """Goal rows of the found light networks: parameters, and latency / LR-ASPP in every runtime of the goal's
    setting (the first: the goal's threads and wall time) and of the one-thread CPU-clock setting."""
    rows: List[List[str]] = []
    for n in found_light_rows(r):
        rows.append([f"{n['name']}: <= 0.87 M parameters (19 classes)", f"{n['params'] / 1e6:.3f} M",
                     _met(n["params"] <= GOAL_PARAMS, True)])
        for s in r["settings"]:
            for row in (x for x in s["rows"] if x["name"] == n["name"]):
                rows.append([f"{n['name']}: latency <= 0.5x LR-ASPP, {RUNTIME_TITLES.get(row['runtime'], row['runtime'])}"
                             f" ({_n(s['threads'], 'thread')}, {s['clock']} clock)", f"{row['round_ratio']:.2f}x",
                             _met(row["round_ratio"] <= GOAL_LATENCY_RATIO, True)])
    return rows


def _ms(g: Optional[Dict[str, Any]]) -> str:
    """``mean ± sd (n runs)`` of a stored group or architecture."""
    if not g or g.get("mean") is None:
        return "n/a"
    sd = f" ± {g['sd']:.4f}" if g.get("sd") is not None else ""
    return f"{g['mean']:.4f}{sd} ({g['n']} run{'s' if g['n'] != 1 else ''})"


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _tau(d: Optional[Dict[str, Any]]) -> str:
    if not d or d.get("kendall_tau") is None:
        return "n/a"
    return (f"Kendall tau **{d['kendall_tau']:+.2f}**{interval_text(d.get('kendall_ci'))} "
            f"(p {d['kendall_p']:.2f}), Spearman "
            f"{d['spearman']:+.2f} (p {d['spearman_p']:.2f})")


def search_vs_random_line(vs: Dict[str, Any]) -> str:
    """The exact permutation test of the searched architectures against the random ones (``quality.search_vs_random``)."""
    return (f"Searched against random architectures, over their means (exact one-sided permutation test, "
            f"{vs['n_searched']} against {vs['n_random']}): {vs['gain'] * 100:+.1f} points, p {vs['p']:.3f} "
            f"(the smallest p this design can give: {vs['min_p']:.3f})")


def quality_goal_text(goal: Dict[str, Any]) -> str:
    """The numbers behind the quality goal of one task."""
    peers = ", ".join(f"{name} {goal[k]:.4f}" for k, name in (("plain_cnn", "best plain CNN"), ("lraspp", "LR-ASPP"))
                      if goal.get(k) is not None)
    return (f"searched {goal['searched']:.4f} vs best random {goal['best_random']:.4f} ({goal['best_random_name']}, "
            f"{goal['margin'] * 100:+.1f} points)" + (f"; {peers}" if peers else ""))


def render_quality(r: Dict[str, Any]) -> str:
    if "tasks" not in r:
        return ("Stored results of an older version of this section; rerun `python -m benchmarks --only quality` "
                "(or `python -m benchmarks.quality`).")
    d = r["design"]
    parts = [f"Per task: {d['search_seeds']} searches (`search.seed` 0..{d['search_seeds'] - 1}), {d['random']} "
             f"random architectures of the same space with parameters within ±{d['param_tolerance']:.0%} of the "
             f"searched architectures' mean, a plain CNN and LR-ASPP-MobileNetV3-Large (no pretrained weights); "
             f"every network trained with {_n(d['train_seeds'], 'seed')}, {_n(d['threads'], 'thread')} per run. In the "
             "picture, searched runs are coloured by search seed and the bars are group means.",
             f"![val mIoU per group, one point per training run]({r['plot']})"]
    trained = d.get("groups") or list(QUALITY_GROUPS)
    if set(trained) != set(QUALITY_GROUPS):
        parts.insert(1, f"An experiment that trained only these groups: {', '.join(trained)} (`--groups`).")
    for task, t in r["tasks"].items():
        s, sm = t["settings"], t["summary"]
        tr, (h, w) = s["train"], s["image_size"]
        ep = s["search_epochs"]
        if t.get("dataset") == "shapes":  # generated into the output folder: name the generator, not the path
            data = f"Shapes made by `benchmarks/shapes.py` in the `folder:` layout, {s['num_classes']} classes"
        else:
            data = f"`{s['data']}` ({s['num_classes']} classes)"
        parts.append(f"### {task}\n\n{data}, {s['num_train']} train / "
                     f"{s['num_val']} val images at {h}x{w}, config `{s['config']}`"
                     + "".join(f" `--set {o}`" for o in s.get("overrides") or []) + ". "
                     f"Every run: {_n(tr['epochs'], 'epoch')}, "
                     f"{tr['optimizer']} lr {tr['lr']}, batch {s['batch_size']}; each search: {ep[0]}+{ep[1]}+{ep[2]} "
                     f"epochs (warm-up, stage 1, stage 2), {s['search_limit_batches'] or 'all'} batches per epoch and "
                     f"split. mIoU: final epoch, on the val split.")
        parts.append(_table(["group", "val mIoU mean ± sd"],
                            [[name, _ms(sm["groups"].get(g))] for g, name in zip(QUALITY_GROUPS, (
                                "searched", "random, similar cost", "plain CNN", "plain CNN, wide",
                                PEER_NAMES["lraspp"])) if g in trained]))
        rows = []
        for a in sm["archs"]:
            rank = a.get("rank_among_random")
            rows.append([a["name"], f"{a['params']:,}", f"{a['macs'] / 1e6:.1f} M", _ms(a),
                         ", ".join(f"{v:.4f}" for v in a["values"]), "" if rank is None else str(rank)])
        parts.append(_table(["network", "params", "MACs", "val mIoU mean ± sd", "per run", "rank among random"],
                            rows))
        lines = []
        goal = sm.get("goal")
        if goal:
            status = "not measured (quick mode: plumbing only)" if r.get("quick") else _met(goal["met"], True)
            lines.append(f"Goal (searched mean >= best random mean + {GOAL_MIOU_MARGIN:.2f}, and above the plain CNN "
                         f"and LR-ASPP): {status}: {quality_goal_text(goal)}.")
        if sm.get("searched_mean_rank") is not None:
            lines.append(f"Searched architectures' mean rank among the {len(t.get('random') or [])} random ones "
                         f"(1 = better than all): {sm['searched_mean_rank']:.1f}.")
        vs = sm.get("search_vs_random")
        if vs:
            lines.append(search_vs_random_line(vs) + ".")
        rc = sm.get("rank_check")
        if rc:
            lines.append(f"`nni-rspnet rank-check` on search seed 0 ({rc['n']} architectures: its own and random "
                         f"draws, {_n(rc['epochs'], 'epoch')} each): {_tau(rc)}"
                         + (f"; their MACs: Kendall tau {rc['macs_kendall_tau']:+.2f} (p {rc['macs_kendall_p']:.2f})"
                            if rc.get("macs_kendall_tau") is not None else "") + ".")
            if rc.get("cell_reliance"):
                lines.append(reliance_line(rc["cell_reliance"]) + ".")
        tt = sm.get("table_tau")
        if tt:
            lines.append(f"The table's {tt['n']} architectures, scored by the supernet of search seed 0 against their "
                         f"mean mIoU above: {_tau(tt)}.")
        mt = sm.get("table_macs_tau")
        if mt and mt.get("kendall_tau") is not None:
            lines.append(f"Their MACs (the criterion of the search's stage 3, `search.rerank_by: macs`) against the "
                         f"same means, over the {mt['n']} searched and random architectures: {_tau(mt)}.")
        noise = agreement_line(sm.get("training_noise"), of=" of the searched and random networks")
        if noise:
            lines.append(noise + ".")
        if lines:
            parts.append("\n".join(f"- {line}" for line in lines))
    return "\n\n".join(parts)


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


def _search_epochs_text(r: Dict[str, Any], batch: int, steps: int, crop: Sequence[int]) -> str:
    w, s1, w2, s2 = r["search_epochs"]
    return (f"{batch} x {crop[0]}x{crop[1]} crops, 2975 images, {steps} steps per epoch, {w}+{s1} warm-up and "
            f"stage-1 epochs, {w2}+{s2} stage-2 epochs")


def _steps_text(step_s: Dict[str, float]) -> str:
    return ", ".join(f"{name} {t:.2f} s" for name, t in step_s.items())


def gpu_projection_measured(r: Dict[str, Any]) -> bool:
    """Whether the GPU projection of ``r`` (the gpu section) was timed at the config's crop and batch (not
    quick mode's small crops)."""
    city = r.get("cityscapes_cost") or {}
    if not r.get("projection") or not city.get("measured") or r.get("quick"):
        return False
    settings = city["table"]["settings"]
    return list(settings["input_size"]) == list(r["crop"]) and settings["batch"] == r["batch_size"]


def projection_rows(r: Dict[str, Any]) -> List[List[str]]:
    """The rows of a full Cityscapes search projected on this CPU (one core) and on the GPU, where measured."""
    rows = []
    c = r.get("cpu")
    if c and c.get("projection"):
        h, wd = c["measured_size"]
        hours = c["projection"]["hours"]
        rows.append([
            f"CPU, one core: {_search_epochs_text(r, c['batch_size'], c['projection']['steps_per_epoch'], c['crop'])}",
            f"steps timed at {c['measured_batch']} x {h}x{wd} ({_steps_text(c['step_s_measured'])}), scaled "
            f"x{c['scale']:.0f} (pixels x batch)"
            + (f"; measured {r['cpu_finished']}" if r.get("cpu_finished") else ""),
            f"**{hours:.0f} core-hours** ({hours / 24:.1f} core-days)", "GPU: < 1 GPU-day (papers: 3-10)"])
    p = r.get("projection")
    if r.get("measured") and p:
        settings = r["cityscapes_cost"]["table"]["settings"]
        h, wd = settings["input_size"]
        step_s = {name: run["step_s"] for name, run in r["cityscapes_cost"]["table"]["runs"].items()}
        hours = p["hours"]
        exact = gpu_projection_measured(r)
        rows.append([
            f"GPU, {r['gpu']}: {_search_epochs_text(r, r['batch_size'], p['steps_per_epoch'], r['crop'])}",
            f"steps timed at {settings['batch']} x {h}x{wd} on the GPU ({_steps_text(step_s)}; median of "
            f"{settings['steps'] - 1} steps after the first), data loading and per-epoch validation not included"
            + ("" if exact else "; not the config's crop and batch, so not a projection of it"),
            f"**{hours:.1f} GPU hours** ({hours / 24:.2f} GPU-days)",
            f"< 1 GPU-day (papers: 3-10): {_met(hours < GOAL_SEARCH_GPU_HOURS, exact)}"])
    return rows


def render_cpu_projection(r: Dict[str, Any]) -> str:
    """The table of a full Cityscapes search projected on this CPU (one core) and, where measured, on the
    GPU (one row each), or ``""``."""
    rows = projection_rows(r)
    return _table(["projection", "from", "full Cityscapes search", "goal"], rows) if rows else ""


def render_gpu(r: Dict[str, Any]) -> str:
    if not r.get("measured"):
        return "\n\n".join(x for x in (f"Not measured: {r.get('why')}.", render_cpu_projection(r)) if x)
    known = dict(r.get("versions") or {"torch": r.get("torch")}, CUDA=r.get("cuda"))
    versions = ", ".join(f"{k} {v}" for k, v in known.items() if v)
    city = r.get("cityscapes_cost") or {}
    where = ("{0} x {1}x{2} crops".format(city["table"]["settings"]["batch"], *city["table"]["settings"]["input_size"])
             if city.get("measured") else "the config's crops")
    parts = [f"On {r['gpu']}" + (f" ({versions})" if versions else "") + ". A full Cityscapes search projected "
             "from the supernet's step time (both stages of the default search, the Cityscapes space) on this GPU "
             "and on one core of the CPU under Machine above:", render_cpu_projection(r),
             f"Cityscapes space, {where}:", render_search_cost(city),
             "Latency, eager PyTorch on the GPU:", render_latency_rows(r["latency"]),
             "Search cost of the tiny space on the GPU:", render_search_cost(r["search_cost"])]
    return "\n\n".join(parts)


def render_fidelity(r: Dict[str, Any]) -> str:
    rows = []
    for name, sp in r["spaces"].items():
        h, w = sp["size"]
        ok = sp["spearman"] >= GOAL_SPEARMAN and sp["median_rel_error"] <= GOAL_REL_ERROR
        rows.append([name, f"{h}x{w}", sp["n"], f"{min(sp['measured_ms']):.1f} .. {max(sp['measured_ms']):.1f}",
                     f"{sp['spearman']:.3f}", f"{sp['median_rel_error']:.1%}", f"{sp['max_rel_error']:.1%}",
                     "not measured (quick mode)" if r.get("quick") else _met(ok, True)])
    return ("Eager PyTorch, one thread, timed by the thread's CPU time; each space's cost table measured as a search "
            "measures it, then random architectures (`random_arch` seeds 100, 101, ...; the table calibrates its "
            "fixed part on seeds 0, 1, 2) built and timed whole, interleaved.\n\n"
            + _table(["space", "input", "architectures", "measured ms (range)", "Spearman", "median relative error",
                      "max relative error", f"goal (Spearman >= {GOAL_SPEARMAN}, error <= {GOAL_REL_ERROR:.0%})"],
                     rows)
            + f"\n\n![predicted against measured latency]({r['plot']})")


RENDERERS = {"search": render_search, "search_cost": render_search_cost, "latency": render_latency,
             "fidelity": render_fidelity,
             "quality": render_quality, "demo": render_demo, "gpu": render_gpu}
TITLES = {"search": "The search behind \"the found network\"", "search_cost": "Search cost",
          "latency": "The found network against torchvision peers (CPU)",
          "fidelity": "Cost-model fidelity: predicted against measured latency",
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
    rsp = {k: v for k, v in ratios.items() if "(default) / full channels" in k and "saved" not in k}
    worst = max(rsp.values()) if rsp else None
    rows.append(["default search / full-channel supernet: step time and peak memory, both stages, <= 0.55x",
                 ", ".join(f"{k.split(',')[0]} {v:.2f}x ({k[k.rfind('(') + 1:-1]})" for k, v in rsp.items()) or "n/a",
                 _met(worst is not None and worst <= GOAL_RSP_COST, worst is not None)])
    mean = next((v for k, v in ratios.items() if k.startswith("step time, TwoStageDarts mean")), None)
    if mean is not None:
        rows.append([f"TwoStageDarts mean step time <= {GOAL_STEP_RATIO:.2f}x stock DARTS", f"{mean:.2f}x",
                     _met(mean <= GOAL_STEP_RATIO, True)])
    gpu = results.get("gpu")
    if gpu:
        label = "full Cityscapes search (both stages) < 1 GPU-day (papers: 3-10)"
        if gpu.get("measured") and gpu.get("projection"):
            hours = gpu["projection"]["hours"]
            rows.append([label, f"{hours:.1f} GPU hours on {gpu['gpu']} (projected from the step time, "
                                f"{gpu['projection']['steps_per_epoch']} steps per epoch; see GPU)",
                         _met(hours < GOAL_SEARCH_GPU_HOURS, gpu_projection_measured(gpu))])
        else:
            rows.append([label, "n/a (no CUDA device)" if not gpu.get("measured") else "n/a", "not measured"])
    lat = results.get("latency")
    if lat and "settings" in lat:
        found = latency_goal_rows(lat)
        rows += found
        if not found:
            rows.append(["found light network (search_spaces/found/cityscapes_light-*.json) <= 0.87 M parameters "
                         "and <= 0.5x LR-ASPP latency", "n/a", "not measured"])
        nets = {n["name"]: n for n in lat["networks"]}
        lo = next((n for n in lat["networks"] if n["name"].endswith("space, lightest") and "cityscapes_light" in n["name"]),
                  None)
        hi = next((n for n in lat["networks"] if n["name"].endswith("space, heaviest") and "cityscapes_light" in n["name"]),
                  None)
        if lo and hi:
            rows.append(["light Cityscapes space spans roughly 0.3 M to 3 M parameters",
                         f"{lo['params'] / 1e6:.2f} M .. {hi['params'] / 1e6:.2f} M", "reported"])
        floor = nets.get("cityscapes space, lightest")
        if floor:
            rows.append(["cityscapes space (not searched): can any architecture be <= 0.87 M parameters?",
                         f"its lightest is {floor['params'] / 1e6:.2f} M",
                         _met(floor["params"] <= GOAL_PARAMS, True) + (" (not reachable as configured)"
                                                                       if floor["params"] > GOAL_PARAMS else "")])
    elif lat:
        for row in (row for row in lat["rows"] if row["name"].startswith("found")):
            rows.append([f"{row['name']}: <= 0.87 M parameters", f"{row['params'] / 1e6:.3f} M",
                         _met(row["params"] <= GOAL_PARAMS, True)])
            rows.append([f"{row['name']}: latency <= 0.5x LR-ASPP", f"{row['round_ratio']:.2f}x",
                         _met(row["round_ratio"] <= GOAL_LATENCY_RATIO, True)])
    else:
        rows.append(["found net <= 0.87 M parameters and <= 0.5x LR-ASPP latency", "n/a", "not measured"])
    fid = results.get("fidelity")
    if fid and fid.get("spaces"):
        for name, sp in fid["spaces"].items():
            rows.append([f"cost model, {name} space: Spearman >= {GOAL_SPEARMAN:.1f}, median relative error <= "
                         f"{GOAL_REL_ERROR:.0%} ({sp['n']} random architectures)",
                         f"Spearman {sp['spearman']:.3f}, median relative error {sp['median_rel_error']:.1%}",
                         _met(sp["spearman"] >= GOAL_SPEARMAN and sp["median_rel_error"] <= GOAL_REL_ERROR,
                              not fid.get("quick"))])
    quality = results.get("quality") or {}
    tasks = quality.get("tasks") or {}
    for task, t in tasks.items():
        goal = t.get("summary", {}).get("goal")
        status = _met(goal["met"], True) if goal else "not measured"
        if goal and quality.get("quick"):
            status = "not measured (quick mode: plumbing only)"
        rows.append([f"{task}: searched >= best random + 1 mIoU point, and above plain CNN and LR-ASPP "
                     "(means over runs)", quality_goal_text(goal) if goal else "n/a", status])
    if not tasks:
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
    return ("Step = one first-order DARTS iteration (an architecture step on a validation batch and a weight step "
            "on a training batch); a warm-up step (`warmup_*`, most of the default search's epochs) is one weight "
            "step on a sampled sub-network: one op per cell edge, two paths per node; each configuration runs in "
            "its own subprocess so its peak memory is its own, "
            "configurations are interleaved over rounds and medians compared. Peak memory on CPU is the rise of the "
            "process' peak RSS after the supernet was built, so it includes allocator slack; \"saved for backward\" "
            "(bytes of tensors autograd keeps) is exact and deterministic." + why)


def _note_latency(r: Dict[str, Any], results: Dict[str, Any]) -> str:
    if "settings" in r:
        return _note_latency_runtimes(r)
    return _note_latency_old(r)


def _note_latency_runtimes(r: Dict[str, Any]) -> str:
    """How to read the per-runtime tables, with the found light network's numbers."""
    parts = [f"All networks are built with {r['classes']} output classes and no auxiliary heads, in eval mode, with "
             "random weights (latency does not depend on them). TorchScript is scripted and frozen (which folds "
             "BatchNorm); onnxruntime runs the exported graph (BatchNorm folded by the exporter) with all graph "
             "optimisations; int8 is onnxruntime's static QDQ quantisation. The \"/ LR-ASPP, same runtime\" column is the goal's number: each network against the peer "
             "run the same way. The one-thread CPU-clock setting counts the time the timing thread spends on a "
             "core, so it is robust to the other jobs of this shared machine; the wall-time setting is the goal's "
             "as stated (2 threads) and drifts with the load."]
    for n in found_light_rows(r):
        lraspp = next((x for x in r["networks"] if x["name"] == PEER_NAMES["lraspp"]), None)
        if lraspp:
            parts.append(f"{n['name']}: {n['params'] / 1e6:.3f} M parameters ({n['params'] / lraspp['params']:.2f}x "
                         f"LR-ASPP's), {n['macs'] / lraspp['macs']:.2f}x LR-ASPP's MACs.")
    return "\n\n".join(parts)


def _note_latency_old(r: Dict[str, Any]) -> str:
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


def _signed(x: Any) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def _note_quality(r: Dict[str, Any], results: Dict[str, Any]) -> str:
    if "tasks" not in r:
        return ""
    parts = ["Every network is trained by the product's own `train_network` with the config's train section (same "
             "epochs, optimiser, schedule and batch size) and scored on the task's val split, which no search sees "
             "(a search trains its weights and architecture on two halves of the train split). \"± sd\" is the "
             "sample standard deviation over all runs of a group or network (training seeds: weights and data "
             "order). Random architectures are the first `random_arch(space, seed)`, seed = 0, 1, ..., within the "
             "parameter band, so they are a fixed, reproducible draw. Rank among random: 1 + the random "
             "architectures with a higher mean. Kendall tau near 1 means the supernet ranks architectures as "
             "training them alone does; near 0, its choice is close to a random draw. The found and random "
             "architectures are in `search_spaces/found/` (`<space>-<task>-seed<s>.json`, "
             "`<space>-<task>-random<seed>.json`)."]
    for task, t in ({} if r.get("quick") else r["tasks"]).items():  # quick mode: plumbing, nothing to read
        sm = t.get("summary", {})
        goal, rc = sm.get("goal"), sm.get("rank_check") or {}
        tau = rc.get("kendall_tau")
        if goal and goal["beats_random"] and not goal["beats_peers"]:
            parts.append(f"{task}: the search beats chance ({goal['margin'] * 100:+.1f} points over the best random "
                         f"architecture of its cost; rank-check tau {_signed(tau)}), but a reference network scores "
                         f"higher: best plain CNN {goal['plain_cnn']:.4f}, LR-ASPP {goal['lraspp']:.4f}.")
        elif goal and not goal["met"] and tau is not None and tau < 0.3:
            parts.append(f"{task}: the goal is not met and the supernet's ranking barely predicts training alone "
                         f"(rank-check tau {tau:+.2f}): the search is choosing on a weak signal, so its "
                         "architectures land where random ones do. The fix is in the supernet (longer warm-up and "
                         "stage 1, sub-networks closer to the trained networks), not in more search seeds.")
        elif goal and not goal["met"] and tau is not None:
            rand = (sm.get("groups") or {}).get("random") or {}
            table = sm.get("table_tau") or {}
            scores = list((table.get("scores") or {}).values())
            runs = rand.get("values") or []
            if rand.get("sd") is not None and rand["sd"] < 0.02:
                why = (f"the random architectures of its cost differ little at this budget (sd {rand['sd']:.3f}), "
                       "so one mIoU point over the best of them is within the training noise")
            else:
                why = (f"a tau of this size over {table.get('n') or len(scores) or 'a few'} architectures still "
                       "leaves the best ones unresolved")
                if len(scores) > 1 and runs:
                    why += (f": the supernet's scores of the table's architectures span "
                            f"{(max(scores) - min(scores)) * 100:.1f} points of mIoU, the random networks' training "
                            f"runs {(max(runs) - min(runs)) * 100:.1f}")
            parts.append(f"{task}: the goal is not met although the supernet ranks architectures fairly (rank-check "
                         f"tau {tau:+.2f}): {why}.")
    if not r.get("complete", True):
        done = sum(len(t.get("runs", {})) + len(t.get("searches", {})) for t in r["tasks"].values())
        parts.append(f"**Incomplete:** {done} jobs had finished when this page was written "
                     "(`python -m benchmarks.quality` continues the run).")
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
    parts = []
    if projection_rows(r):
        batch = r.get("batch_size") or (r.get("cpu") or {}).get("batch_size", 8)
        steps = ((r.get("projection") or (r.get("cpu") or {}).get("projection") or {}).get("steps_per_epoch"))
        parts.append(
            f"How the projection counts: as `nni-rspnet search` with `search_spaces/cityscapes.yaml` loops, the 2975 "
            f"train images cut into a weights part and an architecture part (`search.arch_fraction`), both loaders at "
            f"batch {batch}, so an epoch is {steps} steps, each one weight step and one architecture step on "
            f"batch-{batch} crops; the warm-up epochs, which train the weights only, are counted at the stage-1 step "
            "time (an over-estimate); data loading and the per-epoch validation pass are not counted. (Until this "
            "round the architecture loader took `data.val_batch_size`, 1 for Cityscapes, and an epoch was 1488 "
            "steps; the GPU steps above were timed before that fix, at batch 8 for both halves of a step, as now.)")
    if not r.get("measured"):
        parts.append("No GPU was available to this session, so the 1024x2048 latency table, the GPU supernet step "
                     "time and the projected GPU time of a full Cityscapes search are not given (the CPU projection "
                     "above is). `python -m benchmarks --only gpu` fills this section on a machine with CUDA.")
    return "\n\n".join(parts)


NOTES: Dict[str, Callable[[Dict[str, Any], Dict[str, Any]], str]] = {
    "search": _note_search, "search_cost": _note_search_cost, "latency": _note_latency,
    "fidelity": lambda r, results: "", "quality": _note_quality,
    "demo": _note_demo, "gpu": _note_gpu}
