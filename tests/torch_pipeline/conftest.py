"""Fixtures of the LILA pipeline tests (data, training, evaluation, CLI).

The whole folder is skipped when torch is not installed.
"""

import importlib.util
import random

import pytest

if importlib.util.find_spec("torch") is None or importlib.util.find_spec("safetensors") is None:
    collect_ignore_glob = ["test_*.py"]  # each module also importorskip's torch


#: a tiny model that trains in milliseconds per step
TINY = dict(preset="lila-tiny", d_model=24, n_head=1, n_layer=1, block_size=16, batch_size=2,
            warmup=2, eval_batch_size=16)

WORDS = ("the king queen lord lady sword crown night day love death blood heart fair foul "
         "hath doth thou thee my lord good sweet").split()


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    """A folder of 12 small text documents (about 1.5 kB each)."""
    d = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    for i in range(12):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(40)]
        (d / f"doc{i:02d}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("token-cache")


@pytest.fixture(scope="session", autouse=True)
def _default_cache_in_tmp(tmp_path_factory):
    """The default token cache (``$LEECHLIB_CACHE_DIR``) in a temporary folder, never the user's:
    ``lila eval`` and ``lila quantize`` use it unless given ``--cache-dir`` (a checkpoint's stored
    cache folder is never used), and subprocesses inherit it."""
    import os

    before = os.environ.get("LEECHLIB_CACHE_DIR")
    os.environ["LEECHLIB_CACHE_DIR"] = str(tmp_path_factory.mktemp("default-cache"))
    yield
    if before is None:
        os.environ.pop("LEECHLIB_CACHE_DIR", None)
    else:
        os.environ["LEECHLIB_CACHE_DIR"] = before


@pytest.fixture
def tiny_args(corpus_dir, cache_dir, tmp_path):
    """Arguments of a tiny training run (a dict for TrainConfig)."""
    return dict(TINY, data=str(corpus_dir), cache_dir=str(cache_dir), out=str(tmp_path / "run"),
                steps=6, align_weight=0.0, device="cpu")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: tiny models are fastest that way, and a busy 2-core machine
    slows down many times over when torch's threads compete with other processes."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
