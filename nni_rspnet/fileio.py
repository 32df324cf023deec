"""Files: written atomically, read with one ladder of clear errors.

Every file the package writes (architectures, configs, cost tables, checkpoints, Lightning
checkpoints, models, pictures, reports) goes through ``atomic_path``: the bytes go to a temporary file
beside the target, are flushed to disk, get the usual permissions (``0666 & ~umask``, where
``mkstemp`` alone would leave ``0600``) and are renamed into place. A reader never sees a half-written
file, and a crash or a kill during the write keeps the previous file.

Every JSON or YAML file a user hands in is read by ``read_json`` / ``read_yaml``: a missing file, a
file that does not parse and a file that is not a mapping are each one ``UserError`` that names the
file (the caller picks the subclass: ``ConfigError``, ``ArchError``, ...).
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any, Callable, Dict, Iterator, Optional, Type, Union

import yaml

from .errors import ConfigError, UserError

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename must not land before the bytes do (a crash keeps the old file)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """Yields a temporary path beside ``path`` to write to; on success it is flushed to disk, given the
    usual permissions and renamed to ``path`` (the folder is created); on error it is removed."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # The target's name ends the temporary one, so writers that go by the extension still see it.
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (see ``atomic_path``)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: PathLike, data: Any, indent: int = 2, sort_keys: bool = False,
               default: Optional[Callable[[Any], Any]] = None) -> None:
    """Writes ``data`` as indented JSON with a final newline, atomically."""
    atomic_write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys, default=default) + "\n")


def save_torch(obj: Any, path: PathLike) -> None:
    """``torch.save(obj, path)``, atomically (checkpoints, ``model.pt``)."""
    import torch  # here, not above: the CLI reads its default config path through this module, without torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_figure(fig: Any, path: PathLike, **savefig_kwargs: Any) -> None:
    """``fig.savefig(path, ...)`` for a matplotlib figure, atomically; the format follows the extension."""
    fmt = os.path.splitext(os.fspath(path))[1][1:] or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, **savefig_kwargs)


# --- reading ---------------------------------------------------------------------------------------

def _read_mapping(path: PathLike, what: str, parse: Callable[[str], Any], kind: str, error: Type[UserError],
                  expected: str, empty_ok: bool) -> Dict[str, Any]:
    """The one ladder: missing or unreadable file, not parseable, not a mapping; each names the file."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as err:
        raise error(f"{path}: cannot read the {what} ({err.strerror or err})") from None
    try:
        data = parse(text)
    except (ValueError, yaml.YAMLError) as err:  # JSONDecodeError is a ValueError
        raise error(f"{path}: not valid {kind} ({' '.join(str(err).split())})") from None
    if data is None and empty_ok:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: expected {expected}, got {type(data).__name__}")
    return data


def read_json(path: PathLike, what: str = "file", error: Type[UserError] = ConfigError,
              expected: str = "a JSON object") -> Dict[str, Any]:
    """A JSON object from ``path``.

    Args:
        path: the file.
        what: what the file is, for the messages (``"architecture file"``, ``"cost table"``, ...).
        error: the ``UserError`` subclass to raise.
        expected: what the file should hold, for the message when it is not a JSON object.

    Raises:
        error: the file is missing, is not valid JSON, or is not a JSON object (names the file).
    """
    return _read_mapping(path, what, json.loads, "JSON", error, expected, empty_ok=False)


def read_yaml(path: PathLike, what: str = "file", error: Type[UserError] = ConfigError,
              expected: str = "a mapping") -> Dict[str, Any]:
    """A YAML mapping from ``path`` (an empty file is an empty mapping); errors as ``read_json``."""
    return _read_mapping(path, what, yaml.safe_load, "YAML", error, expected, empty_ok=True)
