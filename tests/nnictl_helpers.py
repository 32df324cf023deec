"""Test helpers around the library's experiment control: run an experiment for the length of a block,
and end what a failed run left behind."""
from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Iterator, List, Mapping, Optional, Union

from nni_rspnet.errors import NniError
from nni_rspnet.nnictl.experiment import Experiment, launch, leftover_processes, stop


@contextlib.contextmanager
def running(config: Union[str, os.PathLike], port: int, working_dir: Union[str, os.PathLike], *,
            env: Optional[Mapping[str, str]] = None, timeout: float = 120.0) -> Iterator[Experiment]:
    """``launch`` as a context: the experiment is stopped and its processes killed on exit, even on error;
    a process that survives that fails the test."""
    exp = launch(config, port, working_dir, env=env, timeout=timeout)
    failed = False
    try:
        yield exp
    except BaseException:
        failed = True
        raise
    finally:
        left = stop(exp)
        if left and not failed:  # on a failure, its own error is the one to see
            raise NniError(f"experiment {exp.id}: processes {left} survived nnictl stop and SIGKILL")


def kill_experiments(folder: Path) -> List[int]:
    """Ends whatever a (failed) run left behind, by the experiment ids found in its working folder;
    returns the processes it had to kill."""
    left = []
    for exp_dir in folder.glob("*") if folder.is_dir() else []:
        if exp_dir.name.startswith("_"):
            continue
        for pid in leftover_processes(exp_dir.name):
            left.append(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return left
