"""Whole models: :func:`quantize_model` and the bit count :func:`model_bits_report`."""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from .codecs import check_method, get_codec
from .layer import LeechQuantizedLinear

__all__ = ["quantize_model", "model_bits_report", "BitsReport"]

def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name.rsplit(".", 1)[-1], p)
               for p in patterns)


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    setattr(owner, child, new)


def _targets(model: nn.Module, skip) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in model.named_modules()
            if type(m) is nn.Linear and not _matches(n, skip)]


@torch.no_grad()
def _hessians(model: nn.Module, targets, data) -> dict:
    """Second moments E[x x^T] (float64, CPU) of the inputs of the target layers."""
    sums = {n: None for n, _ in targets}
    counts = {n: 0 for n, _ in targets}
    hooks = []

    def hook_for(name):
        def hook(mod, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64)
            h = (x.T @ x).cpu()
            sums[name] = h if sums[name] is None else sums[name] + h
            counts[name] += x.shape[0]
        return hook

    for n, m in targets:
        hooks.append(m.register_forward_pre_hook(hook_for(n)))
    was = model.training
    model.eval()
    try:
        batches = [data] if isinstance(data, Tensor) else list(data)
        if not batches:
            raise ValueError("data holds no calibration batch")
        for b in batches:
            if isinstance(b, dict):
                model(**b)
            elif isinstance(b, (tuple, list)):
                model(*b)
            else:
                model(b)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    out = {}
    for n, _ in targets:
        if sums[n] is None:
            continue
        H = sums[n] / max(counts[n], 1)
        H = H + 1e-2 * float(torch.diagonal(H).mean()) * torch.eye(H.shape[0], dtype=H.dtype)
        out[n] = H
    return out


def quantize_model(model: nn.Module, bits=2, method: str = "leech-shape-gain", *,
                   skip: Iterable[str] = ("lm_head",), group="row", data=None,
                   scale_iters: int = 1, scale_dtype: torch.dtype = torch.float16,
                   max_points: int | None = None, workers: int | None = -1, cache: bool = True,
                   callback: Callable[[str, dict], None] | None = None) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (in place) by a :class:`LeechQuantizedLinear`.

    Parameters
    ----------
    model : torch.nn.Module
    bits : float
        Bits per weight of the codes (2: the 48-bit Leech codebooks, the 16-bit E8
        ball, 2-bit RTN).  Scales come on top (see :func:`model_bits_report`).
    method : {"leech-shape-gain", "leech-ball", "e8", "rtn"}
    skip : iterable of str
        ``fnmatch`` patterns of module names (full dotted name, or its last part) to
        leave in float.  Default ``("lm_head",)``: an untied output head stays in
        float.  Embeddings are never quantized (they are not ``nn.Linear``; in LILA the
        LM head is the token embedding).
    group : "row", "tensor" or int
        Scale groups (see :class:`LeechQuantizedLinear`).
    data : torch.Tensor or iterable, optional
        Calibration inputs: ``data`` itself if it is a tensor, else each of its items,
        is fed to the model (``model(b)``; a tuple as ``model(*b)``, a dict as
        ``model(**b)``) to measure the second moment ``E[x x^T]`` of every layer's
        inputs (``in_features**2`` float64 numbers kept per layer), which then weights
        the scale refit.
    scale_iters, scale_dtype, max_points, workers, cache
        As in :meth:`LeechQuantizedLinear.from_linear`.
    callback : callable, optional
        ``callback(name, info)`` after each layer; ``info`` has ``index``, ``total``,
        ``mse``, ``seconds``, ``bits_per_weight``.

    Returns
    -------
    torch.nn.Module
        ``model`` itself.

    Raises
    ------
    ValueError
        Unknown method, a weight with NaN or inf (naming the layer; checked before
        anything is replaced), or a bad argument.

    Examples
    --------
    >>> import torch
    >>> from torch_ext import LilaConfig, LilaTransformer
    >>> from torch_ext.quantize import quantize_model, model_bits_report
    >>> torch.manual_seed(0) and None
    >>> model = LilaTransformer(LilaConfig.preset("lila-tiny"))
    >>> _ = quantize_model(model, method="leech-ball", max_points=64)
    >>> type(model.h[0].mlp.c_fc).__name__
    'LeechQuantizedLinear'
    >>> model(torch.randint(0, 256, (1, 8))).logits.shape
    torch.Size([1, 8, 256])
    >>> r = model_bits_report(model)
    >>> r.quantized_weights, round(r.bits_per_quantized_weight, 3)
    (46080, 2.233)
    """
    method = check_method(method)
    get_codec(method, bits)  # validates bits early
    if isinstance(skip, str):
        skip = (skip,)
    skip = tuple(skip)
    if not all(isinstance(p, str) for p in skip):
        raise TypeError("skip must be an iterable of str patterns")
    targets = _targets(model, skip)
    for n, m in targets:  # fail before replacing anything
        if not bool(torch.isfinite(m.weight.detach()).all()):
            raise ValueError(f"layer {n!r}: weight contains NaN or inf")
    H = _hessians(model, targets, data) if data is not None else {}
    for i, (n, m) in enumerate(targets):
        q = LeechQuantizedLinear.from_linear(m, method, bits, group=group, scale_iters=scale_iters,
                                             scale_dtype=scale_dtype, max_points=max_points,
                                             workers=workers, hessian=H.get(n), cache=cache, name=n)
        _set_module(model, n, q)
        if callback is not None:
            callback(n, {"index": i, "total": len(targets), "mse": q.stats["mse"],
                         "seconds": q.stats["seconds"],
                         "bits_per_weight": q.bits_report()["bits_per_weight"]})
    return model


@dataclasses.dataclass(repr=False)
class BitsReport:
    """Stored bits of a (partly) quantized model; see :func:`model_bits_report`.

    Attributes
    ----------
    layers : list of dict
        One per :class:`LeechQuantizedLinear`: ``name``, ``method`` and its
        :meth:`~LeechQuantizedLinear.bits_report`.
    quantized_weights, quantized_bits : int
        Weights of the quantized layers, and the bits of their codes, scales, gains.
    bits_per_quantized_weight : float
    other_params, other_bits : int
        Every other tensor of the state dict (embeddings, norms, biases, float
        linears), at its dtype.
    total_params, total_bits : int
    bits_per_param : float
        ``total_bits / total_params`` (the whole stored model).
    dense_bits : int
        The same parameters all in float32.

    Notes
    -----
    The repr is a one-line summary; :meth:`table` shows every layer.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torch_ext.quantize import quantize_model, model_bits_report
    >>> net = nn.Sequential(nn.Linear(96, 10), nn.ReLU(), nn.Linear(10, 4, bias=False))
    >>> r = model_bits_report(quantize_model(net, method="rtn", skip=()))
    >>> r
    BitsReport(2 quantized layers: 1000 weights at 2.24 bits/weight; whole model: 1010 parameters at 2.535 bits/parameter, 12.6x smaller than float32)
    >>> print(r.table())
    layer             method  weights  code bits  scale bits  gain bits  bits/weight
    0                 rtn         960       1920         160          0       2.1667
    2                 rtn          40         96          64          0       4.0000
    quantized layers             1000       2016         224          0       2.2400
    other tensors                  10                                        32.0000
    whole model                  1010                                         2.5347
    """

    layers: list
    quantized_weights: int
    quantized_bits: int
    bits_per_quantized_weight: float
    other_params: int
    other_bits: int
    total_params: int
    total_bits: int
    bits_per_param: float
    dense_bits: int

    @property
    def compression(self) -> float:
        """``dense_bits / total_bits``."""
        return self.dense_bits / self.total_bits if self.total_bits else float("nan")

    def __repr__(self) -> str:
        model = (f"whole model: {self.total_params} parameters at {self.bits_per_param:.4g} "
                 "bits/parameter")
        if not self.layers:
            return f"BitsReport(no quantized layers; {model})"
        return (f"BitsReport({len(self.layers)} quantized layers: {self.quantized_weights} weights "
                f"at {self.bits_per_quantized_weight:.4g} bits/weight; {model}, "
                f"{self.compression:.3g}x smaller than float32)")

    def table(self) -> str:
        """A text table, one row per quantized layer, then the totals.

        Columns: the layer's name and method, its weights, the bits of its codes,
        scales and gains, and its bits per weight.  The totals: the quantized
        layers, every other tensor of the state dict (at its own dtype), the whole
        model.
        """
        bits = ("code_bits", "scale_bits", "gain_bits")
        rows = [("layer", "method", "weights", "code bits", "scale bits", "gain bits",
                 "bits/weight")]
        for l in self.layers:
            rows.append((l["name"], l["method"], str(l["weights"]), *(str(l[k]) for k in bits),
                         f"{l['bits_per_weight']:.4f}"))
        sums = [str(sum(l[k] for l in self.layers)) for k in bits]
        rows.append(("quantized layers", "", str(self.quantized_weights), *sums,
                     f"{self.bits_per_quantized_weight:.4f}"))
        other = f"{self.other_bits / self.other_params:.4f}" if self.other_params else ""
        rows.append(("other tensors", "", str(self.other_params), "", "", "", other))
        rows.append(("whole model", "", str(self.total_params), "", "", "",
                     f"{self.bits_per_param:.4f}"))
        width = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = []
        for r in rows:
            cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, width))]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """A markdown table, one row per quantized layer and the totals."""
        rows = ["| layer | method | weights | code bits | scale bits | gain bits | bits/weight |",
                "|---|---|---:|---:|---:|---:|---:|"]
        for l in self.layers:
            rows.append(f"| {l['name']} | {l['method']} | {l['weights']} | {l['code_bits']} | "
                        f"{l['scale_bits']} | {l['gain_bits']} | {l['bits_per_weight']:.4f} |")
        rows.append(f"| **quantized layers** | | {self.quantized_weights} | | | | "
                    f"{self.bits_per_quantized_weight:.4f} |")
        rows.append(f"| **whole model** ({self.other_params} other params) | | {self.total_params} "
                    f"| | | | {self.bits_per_param:.4f} |")
        return "\n".join(rows)


def model_bits_report(model: nn.Module) -> BitsReport:
    """Count the stored bits of ``model``: quantized layers, and everything else.

    Quantized layers are charged their packed codes (pad blocks included), scales
    and gains; every other tensor of the state dict is charged its size at its own
    dtype.  Parameters are counted once even if shared (tied); buffers that are
    not saved (e.g. frozen kernels rebuilt from the config) are not counted.

    Returns
    -------
    BitsReport

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torch_ext.quantize import quantize_model, model_bits_report
    >>> net = nn.Sequential(nn.Linear(96, 10, bias=False))
    >>> r = model_bits_report(quantize_model(net, method="rtn"))
    >>> r.quantized_bits == 10 * 96 * 2 + 10 * 16        # 2-bit codes + one float16 scale a row
    True
    >>> r.bits_per_quantized_weight, r.other_params
    (2.1666666666666665, 0)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    layers = []
    qw = qb = 0
    owned = set()
    for n, m in model.named_modules():
        if isinstance(m, LeechQuantizedLinear):
            r = m.bits_report()
            layers.append({"name": n, "method": m.method, **r})
            qw += r["weights"]
            qb += r["total_bits"]
            for t in (m.packed, m.scales, m.gains):
                if t is not None:
                    owned.add(id(t))
    seen = set()
    other_n = other_b = 0
    sd = model.state_dict(keep_vars=True)
    for t in sd.values():
        if id(t) in owned or id(t) in seen:
            continue
        seen.add(id(t))
        other_n += t.numel()
        other_b += t.numel() * t.element_size() * 8
    total_p = qw + other_n
    total_b = qb + other_b
    return BitsReport(layers=layers, quantized_weights=qw, quantized_bits=qb,
                      bits_per_quantized_weight=qb / qw if qw else float("nan"),
                      other_params=other_n, other_bits=other_b, total_params=total_p,
                      total_bits=total_b, bits_per_param=total_b / total_p if total_p else float("nan"),
                      dense_bits=32 * total_p)
