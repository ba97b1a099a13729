"""Hugging Face folders: quantized a block at a time, loaded back, evaluated (no downloads).

Tiny random Llama, GPT-2 and BERT models are saved here as sharded safetensors
folders with a word-level tokenizer trained on a few sentences.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

transformers = pytest.importorskip("transformers")

from leechlib.cli import main as leechlib_main  # noqa: E402
from torch_ext.quantize import QuantizeConfig, load_pretrained, quantize_model, quantize_pretrained  # noqa: E402
from torch_ext.quantize.folders import FolderError  # noqa: E402
from torch_ext.quantize.layer import LeechQuantizedLinear  # noqa: E402
from torch_ext.quantize.perplexity import perplexity  # noqa: E402

TEXT = textwrap.dedent("""\
    the lattice is a set of points in space closed under addition and subtraction .
    a code is a set of words over an alphabet , and the golay code has twelve dimensions .
    the leech lattice lives in twenty four dimensions and has no roots .
    its minimal vectors number one hundred ninety six thousand five hundred sixty .
    quantization maps every weight to a nearby point of the lattice , with a scale .
    """) * 6


def _tokenizer(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = sorted(set(TEXT.split()))
    vocab = {"[UNK]": 0, "[PAD]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                                pad_token="[PAD]")
    fast.save_pretrained(folder)
    return fast


def _config(arch):
    common = dict(vocab_size=96)
    if arch == "llama":
        return transformers.LlamaConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=64, tie_word_embeddings=True,
                                        **common)
    if arch == "gpt2":
        return transformers.GPT2Config(n_embd=48, n_layer=2, n_head=4, n_positions=64,
                                       bos_token_id=0, eos_token_id=0, **common)
    return transformers.BertConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=96, max_position_embeddings=64, **common)


def _cls(arch):
    return transformers.BertModel if arch == "bert" else transformers.AutoModelForCausalLM


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for arch in ("llama", "gpt2", "bert"):
        torch.manual_seed({"llama": 0, "gpt2": 1, "bert": 2}[arch])
        cfg = _config(arch)
        model = (transformers.BertModel(cfg) if arch == "bert"
                 else transformers.AutoModelForCausalLM.from_config(cfg))
        d = root / arch
        model.save_pretrained(d, max_shard_size="40KB")
        _tokenizer(d)
        out[arch] = d
    (root / "calib.txt").write_text(TEXT, encoding="utf-8")
    out["text"] = root / "calib.txt"
    return out


def _ids(n_batches=6, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, 96, (n_batches, length), generator=g)


def _outputs(model, x):
    with torch.no_grad():
        o = model(x)
    return o.logits if hasattr(o, "logits") else o.last_hidden_state


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bert"])
def test_folder_codes_equal_quantize_model_and_reload(arch, folders, tmp_path):
    """Block at a time from the shards == quantize_model on the whole model, bit for bit;
    load_pretrained and from_pretrained give the in-memory quantized model's outputs."""
    data = _ids()
    cfg = QuantizeConfig(method="rtn", skip=())   # the BERT pooler is quantized too: the outer path
    res = quantize_pretrained(folders[arch], tmp_path / "q", cfg, data=data)
    ref = _cls(arch).from_pretrained(folders[arch]).eval()
    quantize_model(ref, cfg, data=data)
    n_ref = sum(isinstance(m, LeechQuantizedLinear) for m in ref.modules())
    assert len(res.layers) == n_ref > 0
    q = load_pretrained(tmp_path / "q", kind="base" if arch == "bert" else "auto")
    sd_ref, sd_q = ref.state_dict(), q.state_dict()
    assert set(sd_ref) == set(sd_q)
    for k, v in sd_ref.items():
        assert torch.equal(v, sd_q[k]), k
    x = _ids(2, 10, seed=5)
    assert torch.equal(_outputs(ref, x), _outputs(q, x))
    hf = _cls(arch).from_pretrained(tmp_path / "q").eval()
    assert isinstance(hf.get_submodule(next(iter(res.layers))), LeechQuantizedLinear)
    assert torch.equal(_outputs(ref, x), _outputs(hf, x))


def test_folder_without_calibration_and_tied_head_stored_once(folders, tmp_path):
    res = quantize_pretrained(folders["llama"], tmp_path / "q", method="rtn", cache=False)
    assert all(i["calibration"] == "none" for i in res.layers.values())
    index = json.loads((tmp_path / "q" / "model.safetensors.index.json").read_text())
    keys = set(index["weight_map"])
    assert "lm_head.weight" not in keys and "model.embed_tokens.weight" in keys
    assert not any(k.endswith("proj.weight") for k in keys)          # no float weight of a quantized layer
    cfg = json.loads((tmp_path / "q" / "config.json").read_text())
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "leechlib" and set(qc["layers"]) == set(res.layers)
    assert (tmp_path / "q" / "tokenizer.json").is_file()              # the tokenizer comes along
    assert not list((tmp_path / "q").glob(".leechlib*"))              # the progress file is gone
    q = load_pretrained(tmp_path / "q")
    assert q.lm_head.weight is q.model.embed_tokens.weight
    layers = [m for m in q.modules() if isinstance(m, LeechQuantizedLinear)]
    assert layers and not any(m.cache for m in layers)                # the folder's cache=False is followed
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "q")
    assert not any(m.cache for m in hf.modules() if isinstance(m, LeechQuantizedLinear))
    assert all(m.cache for m in load_pretrained(tmp_path / "q", cache=True).modules()
               if isinstance(m, LeechQuantizedLinear))
    # bits counted once for the tied embedding: what the folder stores
    from torch_ext.quantize import model_bits_report

    r = model_bits_report(q)
    assert r.quantized_weights == res.quantized_weights
    assert r.total_params == res.quantized_weights + res.other_params


def test_resume_after_interrupt_gives_the_same_folder(folders, tmp_path):
    data = _ids()
    full = quantize_pretrained(folders["gpt2"], tmp_path / "a", method="rtn", data=data)

    def stop_after_first(name, info):
        if name == "<block>" and info["block"] == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quantize_pretrained(folders["gpt2"], tmp_path / "b", method="rtn", data=data,
                            callback=stop_after_first)
    assert (tmp_path / "b" / "model-00001-of-00003.safetensors").is_file()
    assert not (tmp_path / "b" / "config.json").exists()
    with pytest.raises(FolderError, match="unfinished run with other settings"):
        quantize_pretrained(folders["gpt2"], tmp_path / "b", method="rtn", bits=3, data=data)
    again = quantize_pretrained(folders["gpt2"], tmp_path / "b", method="rtn", data=data)
    assert again.resumed == 1 and len(again.layers) == len(full.layers)
    a, b = load_pretrained(tmp_path / "a").state_dict(), load_pretrained(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_a_real_kill(folders, tmp_path):
    """SIGKILL right after the first block's shard is written (no handler runs): the same
    call resumes from block 1 and gives the folder an uninterrupted run gives."""
    out = tmp_path / "killed"
    code = textwrap.dedent(f"""
        import os, signal, torch
        from torch_ext.quantize import quantize_pretrained
        from torch_ext.quantize import pretrained
        real = pretrained._save_shard
        def save(path, *a, **k):
            (path.parent / (pretrained._TMP + "half-written")).write_bytes(b"x")
            real(path, *a, **k)
            os.kill(os.getpid(), signal.SIGKILL)
        pretrained._save_shard = save
        data = torch.randint(2, 96, (6, 12), generator=torch.Generator().manual_seed(0))
        quantize_pretrained({str(folders["gpt2"])!r}, {str(out)!r}, method="rtn", data=data)
        """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.run([sys.executable, "-c", code], env=env, timeout=300)
    assert p.returncode == -9
    assert (out / "model-00001-of-00003.safetensors").is_file() and not (out / "config.json").exists()
    res = quantize_pretrained(folders["gpt2"], out, method="rtn", data=_ids())
    assert res.resumed == 1 and not list(out.glob(".leechlib*"))
    fresh = quantize_pretrained(folders["gpt2"], tmp_path / "fresh", method="rtn", data=_ids())
    a, b = load_pretrained(out).state_dict(), load_pretrained(fresh.path).state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_side_files_come_along(folders, tmp_path):
    """A sentence-transformers folder keeps its modules (pooling), the tokenizer comes along."""
    import shutil

    src = tmp_path / "st"
    shutil.copytree(folders["bert"], src)
    (src / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (src / "1_Pooling").mkdir()
    (src / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 48,
                                                                "pooling_mode_mean_tokens": True}))
    res = quantize_pretrained(src, tmp_path / "q", method="rtn")
    for f in ("modules.json", "1_Pooling/config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "q" / f).read_bytes() == (src / f).read_bytes(), f
    assert not any(n.startswith("pooler") for n in res.layers)        # the pooler stays float by default


def test_bad_folders_are_clear_errors(folders, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(folders["llama"], src)
    shards = sorted(src.glob("model-*.safetensors"))
    shards[1].unlink()
    with pytest.raises(FolderError, match="missing"):
        quantize_pretrained(src, tmp_path / "o1", method="rtn")
    shards[1].write_bytes(b"\x00" * 100)
    with pytest.raises(FolderError, match="not a readable safetensors"):
        quantize_pretrained(src, tmp_path / "o2", method="rtn")
    with pytest.raises(FolderError, match="no config.json"):
        quantize_pretrained(tmp_path, tmp_path / "o3", method="rtn")
    with pytest.raises(FolderError, match="no folder"):
        quantize_pretrained(tmp_path / "nowhere", tmp_path / "o4", method="rtn")
    # outputs: the source itself, a file, a folder holding something else
    with pytest.raises(ValueError, match="source folder"):
        quantize_pretrained(folders["llama"], folders["llama"], method="rtn")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FolderError, match="not a folder"):
        quantize_pretrained(folders["llama"], tmp_path / "file", method="rtn")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FolderError, match="not empty"):
        quantize_pretrained(folders["llama"], tmp_path / "busy", method="rtn")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    with pytest.raises(FolderError, match="quant_method"):
        load_pretrained(folders["llama"])


def test_command_line_quantize_and_eval_ppl(folders, tmp_path, capsys):
    out = tmp_path / "q"
    rc = leechlib_main(["quantize", str(folders["gpt2"]), "--out", str(out), "--method", "rtn",
                        "--calib", str(folders["text"]), "--calib-tokens", "64", "--calib-context", "16",
                        "--quiet", "--json", str(tmp_path / "r.json")])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "block 2/2" in cap.err and "calibration: 4 windows of 16 tokens" in cap.err
    assert "bits/weight" in cap.out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["blocks"] == 2 and all(i["calibration"] in ("kept", "rejected")
                                         for i in report["layers"].values())
    for folder, what in ((folders["gpt2"], "float"), (out, "quantized (rtn, 2 bits)")):
        rc = leechlib_main(["eval-ppl", str(folder), "--text", str(folders["text"]), "--context", "32",
                            "--stride", "16", "--quiet"])
        cap = capsys.readouterr()
        assert rc == 0, cap.err
        assert what in cap.out and "context 32, stride 16" in cap.out and "bits per token" in cap.out
    # bad input: one line, exit 2
    for argv in (["quantize", str(tmp_path / "none"), "--out", str(tmp_path / "x")],
                 ["quantize", str(folders["gpt2"]), "--out", str(out)],                 # not empty
                 ["quantize", str(folders["gpt2"]), "--out", str(tmp_path / "y"), "--bits", "3",
                  "--method", "leech-ball"],
                 ["quantize", str(folders["gpt2"]), "--out", str(tmp_path / "z"), "--calib",
                  str(tmp_path / "missing.txt")],
                 ["eval-ppl", str(folders["bert"]), "--text", str(folders["text"])],
                 ["eval-ppl", str(folders["gpt2"]), "--text", str(folders["text"]), "--context", "999"]):
        rc = leechlib_main(argv)
        cap = capsys.readouterr()
        assert rc == 2, (argv, cap.err)
        assert cap.err.strip().startswith("error:") and "Traceback" not in cap.err
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_command_line_interrupt_keeps_blocks(folders, tmp_path, capsys, monkeypatch):
    from torch_ext._signals import Interrupted
    from torch_ext.quantize import pretrained

    real, calls = pretrained._save_shard, []

    def save_then_stop(*a, **k):
        real(*a, **k)
        calls.append(1)
        if len(calls) == 1:
            raise Interrupted("SIGTERM")

    monkeypatch.setattr(pretrained, "_save_shard", save_then_stop)
    argv = ["quantize", str(folders["llama"]), "--out", str(tmp_path / "q"), "--method", "rtn", "--quiet"]
    assert leechlib_main(argv) == 143
    assert "run the same command again to resume" in capsys.readouterr().err
    assert leechlib_main(argv) == 0
    assert "resumed from OUT_DIR" in capsys.readouterr().err


def test_perplexity_equals_the_models_own_loss(folders):
    model = transformers.AutoModelForCausalLM.from_pretrained(folders["llama"]).eval()
    ids = _ids(1, 40, seed=3)[0]
    with torch.no_grad():
        loss = model(ids[None], labels=ids[None]).loss.item()
    r = perplexity(model, ids, context=64, stride=32)                # one window: the whole text
    assert r.tokens == 39 and r.windows == 1
    assert r.mean_nll == pytest.approx(loss, rel=1e-5)
    r2 = perplexity(model, ids, context=16, stride=8)                # sliding: every token scored once
    assert r2.tokens == 39 and r2.windows == 4
    with pytest.raises(ValueError, match="stride"):
        perplexity(model, ids, context=8, stride=9)
    with pytest.raises(ValueError, match="at least 2"):
        perplexity(model, ids[:1], context=8)


def test_batch_encoding_calibrates(folders):
    tok = transformers.AutoTokenizer.from_pretrained(folders["gpt2"])
    enc = tok(TEXT.splitlines()[:8], return_tensors="pt", padding=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(folders["gpt2"]).eval()
    quantize_model(model, method="rtn", data=enc)
    st = model.transformer.h[0].mlp.c_fc.stats
    assert st["calibration"] in ("kept", "rejected")


def test_import_registers_with_transformers_lazily():
    code = ("import sys, torch_ext; assert 'transformers' not in sys.modules; "
            "from transformers.quantizers.auto import AUTO_QUANTIZER_MAPPING as M; "
            "assert 'leechlib' in M, sorted(M)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)


def test_crafted_quantization_config_is_a_folder_error(folders, tmp_path):
    import shutil

    base = tmp_path / "q"
    quantize_pretrained(folders["llama"], base, method="rtn")
    raw = json.loads((base / "config.json").read_text())
    name = next(iter(raw["quantization_config"]["layers"]))

    def crafted(edit):
        d = tmp_path / f"c{len(list(tmp_path.iterdir()))}"
        shutil.copytree(base, d)
        cfg = json.loads(json.dumps(raw))
        edit(cfg["quantization_config"])
        (d / "config.json").write_text(json.dumps(cfg))
        return d

    cases = [
        (lambda qc: qc.update(layers=5), "must map layer names"),
        (lambda qc: qc["layers"].update({name: 5}), "must map layer names"),
        (lambda qc: qc["layers"][name].update(in_features=qc["layers"][name]["in_features"] + 24),
         "but the model's layer is"),
        (lambda qc: qc["layers"].update({"model.nowhere": qc["layers"][name]}), "does not have"),
        (lambda qc: qc["layers"].update({"model.norm": qc["layers"][name]}), "not a linear layer"),
        (lambda qc: qc["layers"][name].update(method="nonsense"), "quantization_config.layers"),
        (lambda qc: qc.update(quant_method="other"), "quant_method"),
    ]
    for edit, msg in cases:
        with pytest.raises(FolderError, match=msg):
            load_pretrained(crafted(edit))
    # a code beyond the codebook (a 2-bit RTN code cannot be; a flipped scale to inf can)
    from safetensors.torch import load_file, save_file

    d = tmp_path / "inf"
    shutil.copytree(base, d)
    index = json.loads((d / "model.safetensors.index.json").read_text())
    shard = d / index["weight_map"][name + ".scales"]
    t = load_file(str(shard))
    t[name + ".scales"][0] = float("inf")
    save_file(t, str(shard))
    with pytest.raises(FolderError, match="NaN or inf"):
        load_pretrained(d)


def test_save_quantized_stores_a_tied_head_once(folders, tmp_path):
    from safetensors import safe_open

    from torch_ext.quantize import load_quantized, model_bits_report, save_quantized

    model = transformers.AutoModelForCausalLM.from_pretrained(folders["llama"]).eval()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    quantize_model(model, method="rtn")
    path = tmp_path / "q.safetensors"
    save_quantized(model, path)
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
    assert "lm_head.weight" not in keys and json.loads(meta["tied_tensors"]) == {
        "lm_head.weight": "model.embed_tokens.weight"}
    stored_bits = 8 * sum(t.numel() * t.element_size() for t in
                          [safe_open(str(path), framework="pt").get_tensor(k) for k in keys])
    assert stored_bits == model_bits_report(model).total_bits      # the file holds what the report counts
    fresh = transformers.AutoModelForCausalLM.from_config(_config("llama")).eval()
    back = load_quantized(path, model=fresh)
    assert torch.equal(back.lm_head.weight, back.model.embed_tokens.weight)
    x = _ids(2, 9, seed=7)
    assert torch.equal(_outputs(model, x), _outputs(back, x))
