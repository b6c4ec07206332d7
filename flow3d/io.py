"""File output that is never partial, never mixed with an earlier run's, and never lost.

Every writer goes through :func:`atomic_path` (a temporary file in the same folder, renamed onto
the target when the block succeeds), so a crash or a raised error never leaves a truncated
file at the target path. Temporary names start with a dot and contain ``.tmp`` (see
:func:`is_temporary`): readers skip them, and :func:`remove_stale_temporaries` clears the ones a
killed process (SIGKILL, power loss) could not remove itself.

One rule for every command's output (documented in the README): an output file that exists, or
an output folder that is not empty, is refused unless the user passes ``--overwrite`` (which
replaces the file, or empties the folder first) or, where a command supports it, ``--resume``
(which continues the earlier run in the same folder). :func:`check_output_file` and
:func:`check_output_dir` apply the rule before any expensive work starts.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from flow3d.errors import DataError

_TEMP = re.compile(r"^\..+\.tmp(\.[A-Za-z0-9]+)?$|^\..+\.(old|tmp)$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_temporary(path: str | os.PathLike) -> bool:
    """True for the temporary files and folders this module creates (never a real output)."""
    return bool(_TEMP.match(Path(path).name))


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove temporaries left in ``folder`` by a killed writer; returns what was removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for child in folder.iterdir():
        if is_temporary(child):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
            removed.append(child)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    Use it for writers that want a file name (``trimesh.export``, ``safetensors.save_file``).
    The temporary file keeps ``path``'s suffix so format-sniffing writers behave, and gets the
    permissions a plain ``open(path, "w")`` would (0666 less the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator:
    """Open a temporary file for writing; rename it onto ``path`` when the block succeeds."""
    if not any(m in mode for m in "wx"):
        raise ValueError(f"atomic_open is for writing, got mode {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode.replace("x", "w"), **kwargs) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name, then swap it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ---- the output rule -------------------------------------------------------------------------
def _probe_writable(folder: Path, option: str, shown: Path) -> None:
    """Create (and remove) a temporary file in ``folder``, creating the folder's missing parents
    only virtually: the nearest existing ancestor must be a writable directory."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise DataError(f"{option} {shown}: {existing} is a file, not a folder")
    before = existing.stat()
    try:
        fd, probe = tempfile.mkstemp(prefix=".flow3d-probe.", suffix=".tmp", dir=existing)
    except OSError as e:
        raise DataError(f"{option} {shown}: cannot write in {existing} "
                        f"({e.strerror or type(e).__name__})") from None
    os.close(fd)
    os.unlink(probe)
    # leave no trace: a refused run must not even move the folder's modification time
    with contextlib.suppress(OSError):
        os.utime(existing, ns=(before.st_atime_ns, before.st_mtime_ns))


def _non_empty(path: str | os.PathLike | None, option: str) -> Path:
    if path is None or not str(path).strip():
        raise DataError(f"{option}: an output path is required (got an empty string)")
    return Path(path)


def check_output_file(path: str | os.PathLike | None, option: str = "--out", *,
                      overwrite: bool = False, suffixes: tuple[str, ...] | None = None) -> Path:
    """Apply the output rule to a file: refuse an empty path, a folder, an unwritable location,
    an unsupported extension, and an existing file unless ``overwrite``. Writes nothing."""
    out = _non_empty(path, option)
    if suffixes is not None and out.suffix.lower() not in suffixes:
        raise DataError(f"{option} {out}: unsupported extension {out.suffix or '(none)'!r} "
                        f"(use {', '.join(suffixes)})")
    if out.is_dir():
        raise DataError(f"{option} {out}: is a folder; give a file name")
    if out.exists() and not overwrite:
        raise DataError(f"{option} {out}: file exists; pass --overwrite to replace it")
    _probe_writable(out.parent, option, out)
    return out


def check_output_dir(path: str | os.PathLike | None, option: str = "--out", *,
                     overwrite: bool = False, resume: bool = False,
                     resumable: bool = False) -> Path:
    """Apply the output rule to a folder: refuse an empty path, a file, an unwritable location,
    and a non-empty folder unless ``overwrite`` or ``resume``. Writes nothing (see
    :func:`prepare_output_dir` for the step that empties or creates it). ``resumable`` says
    whether the command has a ``--resume`` flag, so the message can offer it."""
    out = _non_empty(path, option)
    if out.exists() and not out.is_dir():
        raise DataError(f"{option} {out}: is a file, not a folder")
    if out.is_dir() and not (overwrite or resume):
        entries = [c for c in out.iterdir() if not is_temporary(c)]
        if entries:
            flags = "--overwrite to replace them or --resume to continue that run" \
                if resumable else "--overwrite to replace them"
            raise DataError(f"{option} {out}: folder is not empty ({len(entries)} entries); "
                            f"pass {flags}")
    # refusals first, then the (traceless) write probe
    _probe_writable(out, option, out)
    return out


def prepare_output_dir(path: Path, *, overwrite: bool = False) -> Path:
    """Create the checked output folder; with ``overwrite`` first remove what it held, so a
    new run's files are never mixed with an earlier run's. Stale temporaries are cleared."""
    if overwrite and path.is_dir():
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    path.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    return path
