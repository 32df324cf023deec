"""Files: written atomically, read through one bounded reader with one ladder of clear errors.

Every file the package writes (architectures, configs, cost tables, checkpoints, Lightning
checkpoints, models, pictures, reports) goes through ``atomic_path``: the bytes go to a temporary file
beside the target, are flushed to disk, get the usual permissions (``0666 & ~umask``, where
``mkstemp`` alone would leave ``0600``) and are renamed into place. A reader never sees a half-written
file, and a crash or a kill during the write keeps the previous file. An output that cannot be
written (a file where a folder is due, no permission, disk full) is one ``OutputError`` naming it.

Every file a user hands in is read by ``read_bytes``: only a regular file is read (a FIFO or a device
is refused at once instead of blocking), and only up to a size limit, checked before reading. On top
of it ``read_json`` / ``read_yaml`` / ``load_torch``: a missing file, a file that does not parse, a
document nested too deeply or too large once its YAML aliases are expanded, and a file that is not a
mapping are each one ``UserError`` that names the file (the caller picks the subclass: ``ConfigError``,
``ArchError``, ...). YAML is read with ``safe_load`` semantics (no tag ever builds an object) and YAML
1.2 numbers (``1e6`` is a float, where YAML 1.1 reads a string); torch files with
``weights_only=True`` (no pickle ever runs code). ``short`` bounds every value a message shows.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import reprlib
import stat
import tempfile
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Type, Union

import yaml

from .errors import ConfigError, ModelFileError, OutputError, UserError

PathLike = Union[str, os.PathLike]

MAX_TEXT_BYTES = 16 << 20      # a config, architecture, cost table or search space: kilobytes in practice
MAX_TORCH_BYTES = 4 << 30      # a model.pt or checkpoint
MAX_VALUES = 1_000_000         # values in one JSON/YAML document, each YAML alias counted where it is used
MAX_DEPTH = 64                 # nesting of one JSON/YAML document


# --- messages ------------------------------------------------------------------------------------------

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 6, 6, 6, 6
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 60, 60, 40


def short(value: Any, limit: int = 100) -> str:
    """A bounded ``repr`` of ``value`` for messages: nested and long values are cut with ``...``, so a
    message never grows with its input (a YAML file of nested aliases expands to gigabytes)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def human_size(n: float) -> str:
    """``57000000`` -> ``'57.0 MB'``."""
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _reason(err: BaseException) -> str:
    """The short reason of an OS or library error: ``'No space left on device'``."""
    text = getattr(err, "strerror", None) or (str(err).splitlines() or [""])[0]
    return text[:200] or type(err).__name__


# --- writing -------------------------------------------------------------------------------------------

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


def _missing_dirs(path: str) -> List[str]:
    """The folders ``os.makedirs(path)`` would create, deepest last."""
    missing = []
    path = os.path.abspath(path)
    while path and not os.path.exists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing[::-1]


def remove_empty_dirs(folders: List[str]) -> None:
    """Removes those of ``folders`` that are (still) empty, deepest first: what a failed write created."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def make_dirs(path: PathLike, what: str = "output folder") -> str:
    """``os.makedirs(path, exist_ok=True)``; a file in the way or no permission is one ``OutputError``."""
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{path}: expected a folder for the {what}, found a file") from None
    except OSError as err:
        raise OutputError(f"{path}: cannot create the {what} ({_reason(err)})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot write into the {what} (permission denied)")
    return path


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """Yields a temporary path beside ``path`` to write to; on success it is flushed to disk, given the
    usual permissions and renamed to ``path`` (the folder is created); on error it is removed.

    Raises:
        OutputError: the folder cannot be created or written, ``path`` is a folder, or a write fails
            (for example the disk is full); the previous file at ``path`` is kept.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise OutputError(f"{path}: is a folder; expected the path of a file to write")
    created = _missing_dirs(folder)  # removed again if the write fails: a failed write leaves nothing
    make_dirs(folder, "output folder")
    # The target's extension ends the temporary name, so writers that go by the extension still see it.
    suffix = os.path.splitext(os.path.basename(path))[1][:32]
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    except OSError as err:
        remove_empty_dirs(created)
        raise OutputError(f"{path}: cannot write ({_reason(err)})") from None
    os.close(fd)
    try:
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        remove_empty_dirs(created)
        if isinstance(err, OSError) and not isinstance(err, UserError):
            raise OutputError(f"{path}: cannot write ({_reason(err)}); the previous file, if any, is kept") from None
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (see ``atomic_path``)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def finite_json(data: Any) -> Any:
    """``data`` with every NaN or infinite float replaced by ``None`` (JSON has no NaN: a bare ``NaN``
    makes the file unreadable to strict parsers); containers are copied, other values kept."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(v) for v in data]
    return data


def write_json(path: PathLike, data: Any, indent: int = 2, sort_keys: bool = False,
               default: Optional[Callable[[Any], Any]] = None) -> None:
    """Writes ``data`` as indented, strict JSON (NaN and infinities as ``null``) with a final newline,
    atomically."""
    text = json.dumps(finite_json(data), indent=indent, sort_keys=sort_keys, default=default, allow_nan=False)
    atomic_write_text(path, text + "\n")


def save_torch(obj: Any, path: PathLike) -> None:
    """``torch.save(obj, path)``, atomically (checkpoints, ``model.pt``).

    Serialised in memory first: torch's own file writer reports a full disk as a ``RuntimeError`` and
    derives a name from the file name; a plain write reports ``OSError`` (an ``OutputError`` here).
    """
    import torch  # here, not above: the CLI reads its default config path through this module, without torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def save_figure(fig: Any, path: PathLike, **savefig_kwargs: Any) -> None:
    """``fig.savefig(path, ...)`` for a matplotlib figure, atomically; the format follows the extension."""
    fmt = os.path.splitext(os.fspath(path))[1][1:] or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, **savefig_kwargs)


# --- reading -------------------------------------------------------------------------------------------

def check_file(path: PathLike, what: str = "file", error: Type[UserError] = ConfigError,
               max_bytes: int = MAX_TEXT_BYTES) -> int:
    """The size of ``path`` if it is a regular file of at most ``max_bytes``; else ``error`` (as
    ``read_bytes``, without reading: for checking every input before anything is written)."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as err:
        raise error(f"{path}: cannot read the {what} ({_reason(err)})") from None
    _check_stat(st, path, what, error, max_bytes)
    return st.st_size


def _check_stat(st: os.stat_result, path: str, what: str, error: Type[UserError], max_bytes: int) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{path}: the {what} is a folder; expected a file")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: the {what} is not a regular file (a FIFO, socket or device); expected a file")
    if st.st_size > max_bytes:
        raise error(f"{path}: the {what} is {human_size(st.st_size)}, more than the limit of {human_size(max_bytes)}")


def read_bytes(path: PathLike, what: str = "file", error: Type[UserError] = ConfigError,
               max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them: the one reader of every file
    a user hands in.

    The file is opened without blocking and checked before anything is read: a FIFO (which would
    block until a writer comes), a socket, a device or a folder is refused, and so is a file larger
    than ``max_bytes``.

    Raises:
        error: naming the file and what was expected.
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as err:
        raise error(f"{path}: cannot read the {what} ({_reason(err)})") from None
    try:
        _check_stat(os.fstat(fd), path, what, error, max_bytes)
        chunks = []
        left = max_bytes + 1  # a file that grows while it is read is still cut at the limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as err:
        raise error(f"{path}: cannot read the {what} ({_reason(err)})") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise error(f"{path}: the {what} is more than the limit of {human_size(max_bytes)}")
    return data


def read_text(path: PathLike, what: str = "file", error: Type[UserError] = ConfigError,
              max_bytes: int = MAX_TEXT_BYTES) -> str:
    """``read_bytes`` decoded as UTF-8; a file in another encoding is one error naming the byte offset."""
    data = read_bytes(path, what, error, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{os.fspath(path)}: the {what} is not UTF-8 text (byte {err.start}: "
                    f"{data[err.start:err.start + 1]!r}); expected a UTF-8 text file") from None


def check_document(data: Any, where: str, error: Type[UserError] = ConfigError,
                   max_values: int = MAX_VALUES, max_depth: int = MAX_DEPTH) -> Any:
    """``data`` (parsed JSON or YAML) if it holds at most ``max_values`` values nested at most
    ``max_depth`` deep, counting a shared (YAML alias) value each time it is used; else ``error``.

    The walk stops at the limit, so a few hundred bytes of nested aliases (a "billion laughs") cost
    no more than ``max_values`` steps.
    """
    count = 0
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > max_values:
            raise error(f"{where}: more than {max_values:,} values once YAML aliases are expanded; "
                        f"expected a small document")
        if isinstance(value, (dict, list, tuple)):
            if depth > max_depth:
                raise error(f"{where}: nested more than {max_depth} levels deep; expected a shallow document")
            items = value.values() if isinstance(value, dict) else value
            if isinstance(value, dict):
                stack.extend((k, depth + 1) for k in value.keys() if isinstance(k, (tuple, frozenset)))
            stack.extend((v, depth + 1) for v in items)
    return data


class SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no tag ever builds an object) that reads YAML 1.2 numbers: ``1e6`` and
    ``2E-3`` are floats (YAML 1.1, and so PyYAML, reads a float only with a dot: ``1.0e6``)."""


SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def parse_yaml(text: str, where: str, error: Type[UserError] = ConfigError) -> Any:
    """A YAML document from ``text`` (``SafeLoader``), bounded by ``check_document``; errors name ``where``."""
    try:
        data = yaml.load(text, Loader=SafeLoader)  # noqa: S506 - SafeLoader: no tag builds an object
    except yaml.YAMLError as err:
        raise error(f"{where}: not valid YAML ({short(' '.join(str(err).split()), 300)})") from None
    except RecursionError:
        raise error(f"{where}: nested too deeply; expected a shallow document") from None
    return check_document(data, where, error)


def parse_json(text: str, where: str, error: Type[UserError] = ConfigError) -> Any:
    """A JSON document from ``text``, bounded by ``check_document``; errors name ``where``."""
    try:
        data = json.loads(text)
    except ValueError as err:  # JSONDecodeError is a ValueError
        raise error(f"{where}: not valid JSON ({short(str(err), 300)})") from None
    except RecursionError:
        raise error(f"{where}: nested too deeply; expected a shallow document") from None
    return check_document(data, where, error)


def _read_mapping(path: PathLike, what: str, parse: Callable[[str, str, Type[UserError]], Any],
                  error: Type[UserError], expected: str, empty_ok: bool, max_bytes: int) -> Dict[str, Any]:
    """The one ladder: missing, not a regular file, too large, not UTF-8, not parseable, too nested or
    too large, not a mapping; each names the file."""
    path = os.fspath(path)
    data = parse(read_text(path, what, error, max_bytes), path, error)
    if data is None and empty_ok:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: expected {expected}, got {type(data).__name__}")
    return data


def read_json(path: PathLike, what: str = "file", error: Type[UserError] = ConfigError,
              expected: str = "a JSON object", max_bytes: int = MAX_TEXT_BYTES) -> Dict[str, Any]:
    """A JSON object from ``path``.

    Args:
        path: the file.
        what: what the file is, for the messages (``"architecture file"``, ``"cost table"``, ...).
        error: the ``UserError`` subclass to raise.
        expected: what the file should hold, for the message when it is not a JSON object.
        max_bytes: the largest file read.

    Raises:
        error: the file is missing, not a regular file, too large, not UTF-8, not valid JSON, too
            deeply nested, or not a JSON object (names the file).
    """
    return _read_mapping(path, what, parse_json, error, expected, empty_ok=False, max_bytes=max_bytes)


def read_yaml(path: PathLike, what: str = "file", error: Type[UserError] = ConfigError,
              expected: str = "a mapping", max_bytes: int = MAX_TEXT_BYTES) -> Dict[str, Any]:
    """A YAML mapping from ``path`` (an empty file is an empty mapping); errors as ``read_json``."""
    return _read_mapping(path, what, parse_yaml, error, expected, empty_ok=True, max_bytes=max_bytes)


def load_torch(path: PathLike, what: str = "checkpoint", error: Type[UserError] = ModelFileError,
               max_bytes: int = MAX_TORCH_BYTES) -> Any:
    """``torch.load(path, weights_only=True)`` through ``read_bytes``: no pickle runs code, and a missing,
    truncated, refused or foreign file is one ``error`` naming it."""
    path = os.fspath(path)
    return torch_from_bytes(read_bytes(path, what, error, max_bytes), path, what, error)


def torch_from_bytes(data: bytes, path: PathLike, what: str = "checkpoint",
                     error: Type[UserError] = ModelFileError) -> Any:
    """``torch.load`` of ``data`` (read from ``path``) with ``weights_only=True``; errors as ``load_torch``."""
    import torch  # here, not above: see save_torch

    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of a file it then refuses
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a truncated or refused file
        raise error(f"{os.fspath(path)}: cannot load the {what} ({type(err).__name__}: {short(_reason(err), 160)}); "
                    f"it is truncated, not a file of this tool, or holds objects that are not plain data") from None
