"""Tokenizers: bytes (:class:`ByteTokenizer`) or a byte-level BPE (:class:`BPETokenizer`).

Both map text to ids and back exactly (``decode(encode(s)) == s``), have an
end-of-document id ``eos_id`` that only the streams of :mod:`torch_ext.lila.data`
contain, and serialise to JSON (:func:`tokenizer_from_json`) for caches and
checkpoints.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import numpy as np

from .corpora import EOS_TEXT, DataUnavailableError

__all__ = ["ByteTokenizer", "BPETokenizer", "get_tokenizer", "tokenizer_from_json"]


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
    :func:`~torch_ext.lila.data.load_data` contain the end-of-document id.
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
    def train(cls, texts: Iterable[str], vocab_size: int = 2048) -> BPETokenizer:
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
    if not isinstance(kind, str):
        raise ValueError(f"unknown tokenizer kind {str(kind)[:40]!r}")
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        BPETokenizer._require()
        from tokenizers import Tokenizer

        try:
            return BPETokenizer(Tokenizer.from_str(json.dumps(obj["tokenizer"])))
        except Exception as exc:  # tokenizers raises its own exception type for a bad serialisation
            raise ValueError(f"the BPE tokenizer cannot be rebuilt: {' '.join(str(exc).split())[:200]}") from None
    raise ValueError(f"unknown tokenizer kind {str(kind)[:40]!r}")


def get_tokenizer(name: str = "byte"):
    """The untrained tokenizer called ``name``: only ``"byte"`` needs no training.

    BPE tokenizers are trained on a corpus by :func:`~torch_ext.lila.data.load_data`.
    """
    if name == "byte":
        return ByteTokenizer()
    if name == "bpe":
        raise ValueError("tokenizer 'bpe' is trained on the corpus: use load_data(..., tokenizer='bpe')")
    raise ValueError(f"tokenizer must be 'byte' or 'bpe', got {name!r}")
