"""The run directory of a training run: ours, writable, and free of stale temporaries.

A run directory holds a marker file, :data:`MARKER` (``.lila-run``, a small JSON
object with the format and its version), written when the run starts.  Training
writes only into a directory that is new, empty, or has that marker; a non-empty
directory without it is someone else's and is refused, unless ``force``.  Run
directories of older versions (checkpoints, no marker) are recognised by their
checkpoints' format when resuming.

Everything here runs before any data is read or any model is built, so a bad
``out`` costs nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .checkpoint import FORMAT, atomic_write, clean_stale_temporaries, list_checkpoints

__all__ = ["MARKER", "prepare_run_dir", "check_output_file"]

#: the marker file of a run directory
MARKER = ".lila-run"
_MARKER_FORMAT = "lila-run"
_MARKER_VERSION = 1
#: files a run writes besides its checkpoints (their stale temporaries are ours too)
_OUR_FILES = ("metrics.json", "model.safetensors", MARKER)


def _marker_ok(path: Path) -> bool | str:
    """True for a marker of ours, else the reason it is not one."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"its {MARKER} is unreadable ({exc})"
    if not isinstance(obj, dict) or obj.get("format") != _MARKER_FORMAT:
        return f"its {MARKER} is not a LILA run marker"
    version = obj.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > _MARKER_VERSION:
        return f"its {MARKER} has version {version!r}; this version of torch_ext reads version {_MARKER_VERSION}"
    return True


def _is_training_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a safetensors file whose header says it is a LILA training checkpoint."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return (f.metadata() or {}).get("format") == FORMAT
    except Exception:  # not a safetensors file at all
        return False


def _check_place(out: Path) -> None:
    """``out`` must be a directory or creatable as one (no file in its place or above it)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out {str(out)!r} is a file, not a run directory")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"out {str(out)!r} cannot be created: {str(parent)!r} is a file")
            break


def prepare_run_dir(out, *, force: bool = False, resume: bool = False) -> list[tuple[int, Path]]:
    """Make ``out`` a run directory of ours, or refuse; return its checkpoints.

    Parameters
    ----------
    out : str or Path
        The run directory (created with its parents if missing).
    force : bool
        Also take a non-empty directory without the marker (files of a run's
        names in it are overwritten).
    resume : bool
        The run continues from the directory's latest checkpoint; without it, a
        directory with checkpoints is refused.

    Returns
    -------
    list of (int, Path)
        The checkpoints in ``out`` (:func:`~torch_ext.lila.checkpoint.list_checkpoints`).

    Raises
    ------
    ValueError
        ``out`` is someone else's directory (non-empty, no marker) and not
        ``force``, or holds checkpoints and not ``resume``.
    OSError
        ``out`` is a file or under one (:class:`NotADirectoryError`), or cannot be
        created or written (a clear message naming it).

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> prepare_run_dir(d / "run"), sorted(p.name for p in (d / "run").iterdir())
    ([], ['.lila-run'])
    >>> _ = (d / "mine").mkdir(), (d / "mine" / "notes.txt").write_text("my notes")
    >>> prepare_run_dir(d / "mine")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: out '...mine' is not empty and is not a LILA run directory (no .lila-run file): ...
    """
    out = Path(out)
    _check_place(out)
    if out.is_dir() and (out / MARKER).exists():
        ok = _marker_ok(out / MARKER)
        if ok is not True and not force:
            raise ValueError(f"out {str(out)!r} is not a run directory of this version: {ok} "
                             "(pass force=True, --force, to write into it anyway)")
    elif out.is_dir() and any(out.iterdir()) and not force:
        cks = list_checkpoints(out)
        legacy = bool(cks) and all(_is_training_checkpoint(p) for _, p in cks)  # a run of an older version
        if legacy and not resume:
            raise ValueError(f"out {str(out)!r} already holds checkpoints: pass resume=True (--resume) "
                             "to continue that run, or choose another out directory")
        if not legacy:
            raise ValueError(f"out {str(out)!r} is not empty and is not a LILA run directory (no {MARKER} file): "
                             "refusing to write into it; choose a new or empty directory, or pass force=True "
                             "(--force) to write into it anyway")
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / MARKER, json.dumps({"format": _MARKER_FORMAT, "version": _MARKER_VERSION}).encode())
    except OSError as exc:
        raise _same_kind(exc, f"cannot write the run directory {str(out)!r}: {exc.strerror or exc}") from None
    clean_stale_temporaries(out, _OUR_FILES)
    cks = list_checkpoints(out)
    if cks and not resume:
        raise ValueError(f"out {str(out)!r} already holds checkpoints: pass resume=True (--resume) "
                         "to continue that run, or choose another out directory")
    return cks


def _same_kind(exc: OSError, message: str) -> OSError:
    """An error of the type and errno of ``exc`` whose text is ``message`` alone (no ``[Errno N]``)."""
    err = type(exc)(message)
    err.errno = exc.errno
    return err


def check_output_file(path, what: str) -> Path:
    """Refuse, before any work, an output file that cannot be written: a folder, or in a missing
    or read-only folder.  Nothing is created.

    Examples
    --------
    >>> check_output_file("/no/such/dir/x.json", "--json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: --json '/no/such/dir/x.json': the folder '/no/such/dir' does not exist
    """
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{what} {str(p)!r} is a folder, not a file")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise FileNotFoundError(f"{what} {str(p)!r}: the folder {str(parent)!r} does not exist")
    if not parent.is_dir():
        raise NotADirectoryError(f"{what} {str(p)!r}: {str(parent)!r} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise PermissionError(f"{what} {str(p)!r} cannot be written (no write access, or a read-only file system)")
    return p
