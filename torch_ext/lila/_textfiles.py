"""Reading local text files: encodings, undecodable bytes, files that are not files.

Used by :class:`~torch_ext.lila.corpora.LocalTextSource`.
"""

from __future__ import annotations

import encodings
import math
import re
import stat
from pathlib import Path

#: how undecodable bytes in local text files are handled (``errors`` of :meth:`bytes.decode`)
ENCODING_ERRORS = ("strict", "replace", "ignore")


def check_encoding(encoding, errors) -> tuple[str, str]:
    """``(encoding, errors)`` checked: a codec Python knows, and one of :data:`ENCODING_ERRORS`."""
    if not isinstance(encoding, str) or not encoding:
        raise TypeError(f"encoding must be a codec name such as 'utf-8' or 'latin-1', got {encoding!r}")
    try:  # the standard library's codecs (a catch-all search function of another package would accept any name)
        if encodings.search_function(encoding.lower()) is None:
            raise LookupError(encoding)
        b"a".decode(encoding, "ignore")  # LookupError for bytes-to-bytes codecs (base64, rot13...)
    except LookupError:
        raise ValueError(f"encoding must be a codec name such as 'utf-8' or 'latin-1', got {encoding!r}") from None
    if errors not in ENCODING_ERRORS:
        raise ValueError(f"encoding_errors must be one of {ENCODING_ERRORS}, got {errors!r}")
    return encoding, errors


def read_text(path, encoding: str = "utf-8", errors: str = "strict") -> str:
    r"""The text of the file ``path``; an undecodable byte is a ``ValueError`` naming the file and offset.

    Parameters
    ----------
    path : str or Path
        A text file.
    encoding : str
        Its encoding (any codec Python knows).
    errors : {"strict", "replace", "ignore"}
        ``"strict"``: refuse undecodable bytes; ``"replace"``: turn them into U+FFFD;
        ``"ignore"``: drop them.

    Examples
    --------
    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> _ = open(f, "wb").write(b"caf\xe9")
    >>> read_text(f, "latin-1"), read_text(f, errors="replace") == "caf\ufffd"
    ('café', True)
    >>> read_text(f)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: data file ... is not valid utf-8: byte 0xe9 at offset 3 ...
    """
    encoding, errors = check_encoding(encoding, errors)
    raw = Path(path).read_bytes()
    try:
        return raw.decode(encoding, errors)
    except UnicodeDecodeError as exc:
        bad = raw[exc.start:exc.end][:4]
        raise ValueError(
            f"data file {str(path)!r} is not valid {encoding}: byte {' '.join(f'0x{b:02x}' for b in bad)} at "
            f"offset {exc.start} ({exc.reason}); give its encoding (--encoding, e.g. latin-1) or "
            f"--encoding-errors replace|ignore"
        ) from None


def describe_kind(path: Path) -> str:
    """What a path that is neither a regular file nor a folder is: 'a FIFO', 'a socket'..."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "missing"
    for test, what in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "not a regular file"


def eos_documents(base: str, text: str, sep: str) -> list[tuple[str, str]] | None:
    """The documents of a file whose documents are separated by lines equal to ``sep`` (else None)."""
    if not re.search(rf"^{re.escape(sep)}$", text, flags=re.M):
        return None
    parts = re.split(rf"^{re.escape(sep)}\n?", text, flags=re.M)
    return [(f"{base}#{i}", p.strip("\n")) for i, p in enumerate(parts)]


def split_single_file(path: Path, text: str, sep: str) -> list[tuple[str, str]]:
    base = path.name
    docs = eos_documents(base, text, sep)
    if docs is not None:
        return docs
    n_pieces = max(10, math.ceil(len(text) / 65536))
    target = max(1, len(text) // n_pieces)
    lines = text.splitlines(keepends=True)
    docs, cur, size = [], [], 0
    for line in lines:
        cur.append(line)
        size += len(line)
        if size >= target:
            docs.append("".join(cur))
            cur, size = [], 0
    if cur:
        docs.append("".join(cur))
    return [(f"{base}#{i}", d) for i, d in enumerate(docs)]
