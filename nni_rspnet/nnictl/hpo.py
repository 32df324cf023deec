"""The architecture as an NNI hyper-parameter search space, and a tuner sample back as an architecture.

NNI 2.10.1 has no YAML form for Retiarii experiments, so ``nnictl`` runs HPO experiments. For a
multi-trial architecture search (``experiment_configs/arch_hpo.yml``) the tuner samples the
architecture itself: every label of the model space becomes one ``choice`` parameter (an op choice over
op names, an input choice over the sorted index lists of ``itertools.combinations``), so a tuner sample
*is* a ``fixed_arch`` dict. Hyper-parameters of the run can sit beside the labels as dotted keys
(``train.lr``, ``search.arc_lr``); ``split_sample`` separates the two.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from nni.nas.execution.common.utils import get_mutation_dict

from ..errors import ArchError, ConfigError
from ..fileio import atomic_write_text, read_json, short
from ..schema import split_key
from ..space.arch import Arch, space_spec, validate

SearchSpace = Dict[str, Dict[str, Any]]


def export_search_space(config, extra: Optional[Mapping[str, Mapping[str, Any]]] = None) -> SearchSpace:
    """The NNI tuner search space (``{"_type": "choice", "_value": [...]}`` per label) of a model space.

    Args:
        config: a ``SpaceConfig``, a mapping of its fields, or a YAML path.
        extra: further tuner parameters to search together with the architecture, keyed
            ``SECTION.KEY`` (for example ``{"train.lr": {"_type": "loguniform", "_value": [1e-3, 1e-1]}}``).

    Returns:
        A JSON-ready dict, labels sorted, then the extra parameters.
    """
    if extra is not None and not isinstance(extra, Mapping):
        raise ConfigError(f"extra search-space parameters: expected a JSON object of SECTION.KEY -> "
                          f"{{_type, _value}}, got {type(extra).__name__}")
    space: SearchSpace = {label: {"_type": "choice", "_value": choice.values()}
                          for label, choice in space_spec(config).items()}
    for key, value in (extra or {}).items():
        split_key(key, f"extra search-space parameter {short(key, 60)}")  # never a label: labels have no section
        if not isinstance(value, Mapping) or "_type" not in value or "_value" not in value:
            raise ConfigError(f"extra search-space parameter {key!r}: expected an object with '_type' and "
                              f"'_value', got {short(value, 60)}")
        space[key] = dict(value)
    return space


def write_search_space(config, path: Union[str, os.PathLike],
                       extra: Optional[Mapping[str, Mapping[str, Any]]] = None) -> SearchSpace:
    """Writes ``export_search_space(config, extra)`` to ``path`` as JSON (atomically) and returns it."""
    space = export_search_space(config, extra)
    atomic_write_text(path, format_search_space(space))
    return space


def format_search_space(space: Mapping[str, Any]) -> str:
    """JSON with one parameter per line: readable, and a regenerated file diffs label by label."""
    rows = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in space.items()]
    return "{\n" + ",\n".join(rows) + "\n}\n"


def split_sample(sample: Optional[Mapping[str, Any]]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Splits a tuner sample into architecture labels and config settings.

    Keys with a ``/`` are architecture labels (``cell/node1/op0``); keys ``SECTION.KEY`` are config
    settings (``search.arc_lr``, for ``RunConfig.load(..., sample=...)``). Anything else is an error
    naming the key.

    Returns:
        ``(arch_part, settings)``; both are empty for an empty or ``None`` sample (standalone run).
    """
    arch: Dict[str, Any] = {}
    settings: Dict[str, Any] = {}
    for key, value in (sample or {}).items():
        if "/" in key:
            arch[key] = value
            continue
        split_key(key, f"tuner parameter {key!r}")  # fails here, naming the key, before anything runs
        settings[key] = value
    return arch, settings


def sample_to_arch(sample: Mapping[str, Any], config, source: str = "tuner sample") -> Arch:
    """The validated architecture in a tuner sample (its dotted hyper-parameters are ignored).

    Raises:
        ArchError: a missing or unknown label, or a value outside the label's choices, named.
    """
    arch, _ = split_sample(sample)
    if not arch:
        raise ArchError(f"{source}: holds no architecture label; was the tuner given a search space from "
                        f"'nni-rspnet export-search-space'?")
    return validate(arch, config, source=source)


def load_search_space(path: Union[str, os.PathLike]) -> SearchSpace:
    """Reads a tuner search-space JSON file, checking that every entry has ``_type`` and ``_value``."""
    path = os.fspath(path)
    space = read_json(path, "search-space file", expected="a JSON object of parameter -> {_type, _value}")
    for key, entry in space.items():
        if not isinstance(entry, dict) or "_type" not in entry or "_value" not in entry:
            raise ConfigError(f"{path}: parameter {key!r} must be an object with '_type' and '_value'")
    return space


def check_search_space_matches(space: Mapping[str, Any], config, source: str = "search space") -> List[str]:
    """Checks that the architecture labels of a tuner search space are exactly those of the model space.

    Returns:
        The architecture labels.

    Raises:
        ArchError: a label missing from the search space, or one the model space does not have, or a
            choice list that differs from the model's (the JSON was generated from another config).
    """
    expected = export_search_space(config)
    labels = [k for k in space if "/" in k]
    for label in labels:
        if label not in expected:
            raise ArchError(f"{source}: label {label!r} is not in the model space; regenerate it with "
                            f"'nni-rspnet export-search-space'")
        if list(space[label].get("_value", [])) != expected[label]["_value"]:
            raise ArchError(f"{source}: the choices of {label!r} differ from the model space; regenerate it "
                            f"with 'nni-rspnet export-search-space'")
    missing = sorted(set(expected) - set(labels))
    if missing:
        raise ArchError(f"{source}: missing label {missing[0]!r} of the model space")
    return labels


def distinct_inputs(model: Any) -> bool:
    """``model_filter`` for NNI's multi-trial strategies: True when every input choice picks distinct inputs.

    NNI 2.10.1's multi-trial samplers (``Random``, ``RegularizedEvolution``, ...) draw the ``n_chosen``
    indices of an ``InputChoice`` independently, so a sample such as ``[1, 1]`` happens; our spaces
    reject it when the network is built, and the trial fails (and a failed trial can stall
    ``RegularizedEvolution`` for good). Passed as ``model_filter=distinct_inputs``, such samples are
    dropped before they are submitted and the strategy draws again.

    Args:
        model: the NNI ``Model`` a strategy is about to submit.
    """
    for value in get_mutation_dict(model).values():
        if isinstance(value, list) and len(set(map(repr, value))) != len(value):
            return False
    return True
