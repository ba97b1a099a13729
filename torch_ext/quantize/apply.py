"""Whole models: :func:`quantize_model` and the bit count :func:`model_bits_report`."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable

import torch
from torch import nn

from .calibrate import CalibrationPlan, _set_module, as_batches
from .config import QuantizeConfig, resolve_config
from .layer import LeechQuantizedLinear, is_conv1d

__all__ = ["quantize_model", "model_bits_report", "BitsReport"]

#: quantize_model's legacy positional settings, in order
_POSITIONAL = ("bits", "method")


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name.rsplit(".", 1)[-1], p)
               for p in patterns)


def _uses(model: nn.Module) -> dict[int, list[str]]:
    """Every name of each module (a module used at several places has several)."""
    out: dict[int, list[str]] = {}
    for n, m in model.named_modules(remove_duplicate=False):
        out.setdefault(id(m), []).append(n)
    return out


def _targets(model: nn.Module, skip) -> list[tuple[str, nn.Module]]:
    """The ``nn.Linear`` (and Hugging Face ``Conv1D``) layers not matched by ``skip``.

    A layer used at several places is listed once, by its first name, and left in
    float if any of its names matches ``skip``.
    """
    uses = _uses(model)
    return [(n, m) for n, m in model.named_modules()
            if (type(m) is nn.Linear or is_conv1d(m))
            and not any(_matches(u, skip) for u in uses[id(m)])]


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if meta:
        raise ValueError(f"the model is on the meta device ({meta[0]!r} has no values): load its "
                         "weights first (e.g. from_pretrained, or load_state_dict(..., assign=True))")


def quantize_model(model: nn.Module, config: QuantizeConfig | None = None, *args, data=None,
                   workers: int | None = -1, cache: bool | None = None,
                   callback: Callable[[str, dict], None] | None = None, progress: bool = False,
                   **settings) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (in place) by a :class:`LeechQuantizedLinear`.

    Hugging Face ``Conv1D`` layers (GPT-2's linear layers, weight stored
    transposed) are replaced too.  A layer used at several places (one module
    under several names) becomes one quantized layer at every place (left in
    float if any of its names matches ``skip``).  If anything fails part-way (an
    error, a raising ``callback``, an interrupt), every layer already replaced is
    put back: the model is as it was.

    Parameters
    ----------
    model : torch.nn.Module
    config : QuantizeConfig, optional
        How to quantize (default ``QuantizeConfig()``); see
        :class:`~torch_ext.quantize.QuantizeConfig` for every setting: ``method``,
        ``bits`` (2: the 48-bit Leech codebooks, the 16-bit E8 ball, 2-bit RTN;
        scales come on top, see :func:`model_bits_report`), ``skip`` (``fnmatch``
        patterns of module names, full dotted name or its last part, left in float;
        default: output heads and poolers, :data:`~torch_ext.quantize.config.DEFAULT_SKIP`
        (``lm_head``, ``*pooler.*``, ``classifier``, ...), stay in float; embeddings
        are never quantized, they are not ``nn.Linear``), ``group``, ``rotation``
        (layers whose size cannot be rotated fall back, noted in their ``stats``),
        ``feedback`` (default ``"ldlq"`` with ``data``, ``"none"`` without; with
        ``data`` and ``"none"``, calibration only weights the scale refit),
        ``seed``, ``damp``, ``act_order``, ``scale_iters``, ``scale_dtype``,
        ``max_points``.
    data : torch.Tensor or iterable, optional
        Calibration inputs: a tensor (cut into at most 8 batches along its first
        dimension), an iterable of batches, or a ``DataLoader``.  Each batch is fed
        to the model as ``model(b)``, a tuple as ``model(*b)``, a dict as
        ``model(**b)``.  The layers are then quantized one group at a time in the
        order the model calls them, each on the inputs of the already quantized
        model, with a held-out guard (:mod:`torch_ext.quantize.calibrate`): every
        4th batch is held out, and a layer keeps its calibrated quantization only
        if its error on the held-out inputs is lower than without calibration.
    workers, cache
        As in :meth:`LeechQuantizedLinear.from_linear`.
    callback : callable, optional
        ``callback(name, info)`` after each layer; ``info`` has ``index``, ``total``,
        ``mse``, ``seconds`` (quantization), ``bits_per_weight``, ``rotation``,
        ``feedback``, ``calibration`` (``"kept"``, ``"rejected"`` or ``"none"``),
        ``notes`` and, when calibrated, ``val_error``, ``damp``, ``damp_raised``,
        ``calibration_seconds``.
    progress : bool
        Show a progress bar of the layers on stderr (``tqdm``); the library prints
        nothing otherwise.
    *args, **settings
        Instead of a config, as before: the settings as keywords
        (``quantize_model(model, method="rtn", group=48)``), ``bits`` and
        ``method`` also positionally, in that order (``quantize_model(model, 2,
        "rtn")``).  With a config, a setting keyword is a ``TypeError``.

    Returns
    -------
    torch.nn.Module
        ``model`` itself.

    Raises
    ------
    ValueError
        Unknown method, rotation or feedback; ``feedback="ldlq"`` without ``data``;
        a model on the meta device; a model that already holds quantized layers
        (quantize the float model); a weight with NaN or inf (naming the layer;
        checked before anything is replaced); a calibration batch the model fails
        on (naming the batch, the model's error chained); non-finite activations
        (naming the layer); or a bad setting.
    TypeError
        ``data`` of the wrong kind; a setting of the wrong kind; a config and a
        setting keyword together (naming the keyword).

    Examples
    --------
    >>> import torch
    >>> from torch_ext import LilaConfig, LilaTransformer
    >>> from torch_ext.quantize import quantize_model, model_bits_report
    >>> torch.manual_seed(0) and None
    >>> model = LilaTransformer(LilaConfig.preset("lila-tiny"))
    >>> _ = quantize_model(model, method="leech-ball", max_points=64)
    >>> model.h[0].mlp.c_fc  # doctest: +ELLIPSIS
    LeechQuantizedLinear(in_features=48, out_features=192, ..., method='leech-ball', ..., rotation='hadamard')
    >>> model(torch.randint(0, 256, (1, 8))).logits.shape
    torch.Size([1, 8, 256])
    >>> r = model_bits_report(model)
    >>> r.quantized_weights, round(r.bits_per_quantized_weight, 3)
    (46080, 2.233)

    With calibration data (LDLQ feedback and the held-out guard), and the settings
    in a :class:`~torch_ext.quantize.QuantizeConfig`:

    >>> from torch_ext.quantize import QuantizeConfig
    >>> model = LilaTransformer(LilaConfig.preset("lila-tiny"))
    >>> data = torch.randint(0, 256, (8, 32))        # 8 batches of one window; 2 held out
    >>> _ = quantize_model(model, QuantizeConfig(method="rtn"), data=data)
    >>> st = model.h[0].mlp.c_fc.stats
    >>> st["feedback"], st["calibration"] in ("kept", "rejected")
    ('ldlq', True)
    """
    _check_model(model)
    config = resolve_config(config, args, settings, caller="quantize_model", positional=_POSITIONAL)
    if config.feedback == "ldlq" and data is None:
        raise ValueError("feedback='ldlq' needs calibration data: pass data=")
    done = [n for n, m in model.named_modules() if isinstance(m, LeechQuantizedLinear)]
    if done:
        raise ValueError(f"the model is already quantized ({len(done)} quantized layer(s), e.g. "
                         f"{done[0]!r}): quantizing it again would keep those layers as they are; "
                         "quantize the float model instead")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    targets = _targets(model, config.skip)
    for n, m in targets:  # fail before replacing anything
        if not bool(torch.isfinite(m.weight.detach()).all()):
            raise ValueError(f"layer {n!r}: weight contains NaN or inf")
    batches = as_batches(data) if data is not None else None
    uses = _uses(model)
    aliases = {n: [u for u in uses[id(m)] if u != n] for n, m in targets}
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(targets), desc="quantizing layers", unit="layer")
        user = callback

        def callback(name, info):
            bar.set_postfix_str(name)
            bar.update(1)
            if user is not None:
                user(name, info)

    plan = CalibrationPlan(model, targets, config, workers=workers, cache=cache, callback=callback,
                           aliases=aliases)
    try:
        plan.run(batches)
    except BaseException:  # an error, a raising callback, an interrupt: the model as it was
        for n, m in targets:
            for u in (n, *aliases[n]):
                _set_module(model, u, m)
        raise
    finally:
        if bar is not None:
            bar.close()
    return model


@dataclasses.dataclass(repr=False)
class BitsReport:
    """Stored bits of a (partly) quantized model; see :func:`model_bits_report`.

    Attributes
    ----------
    layers : list of dict
        One per :class:`LeechQuantizedLinear`: ``name``, ``method``, ``rotation``,
        its :meth:`~LeechQuantizedLinear.bits_report` and, for a layer quantized in
        this process, from its ``stats``: ``seconds`` (quantization, calibration
        passes included), ``feedback``, ``calibration`` (``"kept"``, ``"rejected"``,
        ``"none"``), ``damp``, ``damp_raised``, ``notes``.
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
    notes : list of str
        ``"layer: note"`` for what did not go as asked (a rotation that fell back, a
        damping that had to be raised, a layer the calibration data never reached).

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
    BitsReport(2 quantized layers: 1000 weights at 2.24 bits/weight;
    whole model: 1010 parameters at 2.535 bits/parameter, 12.6x smaller than float32)
    >>> print(r.table())  # doctest: +ELLIPSIS
    layer             method  weights  code bits  scale bits  gain bits  bits/weight  rotation  calibration  seconds
    0                 rtn         960       1920         160          0       2.1667  hadamard  none         ...
    2                 rtn          40         96          64          0       4.0000  hadamard  none         ...
    quantized layers             1000       2016         224          0       2.2400 ...
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
    notes: list = dataclasses.field(default_factory=list)

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
        scales and gains, its bits per weight, its rotation, whether calibration
        was kept (``kept``, ``rejected``, ``none``; empty for a loaded layer) and the
        seconds it took.  The totals: the quantized layers, every other tensor of
        the state dict (at its own dtype), the whole model.  Then the notes, if any.
        """
        bits = ("code_bits", "scale_bits", "gain_bits")
        rows = [("layer", "method", "weights", "code bits", "scale bits", "gain bits",
                 "bits/weight", "rotation", "calibration", "seconds")]
        for x in self.layers:
            sec = f"{x['seconds']:.2f}" if "seconds" in x else ""
            rows.append((x["name"], x["method"], str(x["weights"]), *(str(x[k]) for k in bits),
                         f"{x['bits_per_weight']:.4f}", x.get("rotation", ""),
                         x.get("calibration", ""), sec))
        sums = [str(sum(x[k] for x in self.layers)) for k in bits]
        secs = [x["seconds"] for x in self.layers if "seconds" in x]
        rows.append(("quantized layers", "", str(self.quantized_weights), *sums,
                     f"{self.bits_per_quantized_weight:.4f}", "", "",
                     f"{sum(secs):.2f}" if secs else ""))
        other = f"{self.other_bits / self.other_params:.4f}" if self.other_params else ""
        rows.append(("other tensors", "", str(self.other_params), "", "", "", other, "", "", ""))
        rows.append(("whole model", "", str(self.total_params), "", "", "",
                     f"{self.bits_per_param:.4f}", "", "", ""))
        width = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = []
        for r in rows:
            cells = [c.ljust(w) if i < 2 or i in (7, 8) else c.rjust(w)
                     for i, (c, w) in enumerate(zip(r, width, strict=True))]
            lines.append("  ".join(cells).rstrip())
        lines += [f"note: {n}" for n in self.notes]
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
    layers, notes = [], []
    qw = qb = 0
    owned = set()
    for n, m in model.named_modules():
        if isinstance(m, LeechQuantizedLinear):
            r = m.bits_report()
            entry = {"name": n, "method": m.method, "rotation": m.rotation.kind, **r}
            st = m.stats
            if "seconds" in st:
                entry["seconds"] = st["seconds"] + st.get("calibration_seconds", 0.0)
            for k in ("feedback", "calibration", "damp", "damp_raised"):
                if k in st:
                    entry[k] = st[k]
            entry["notes"] = list(st.get("notes", []))
            notes += [f"{n}: {x}" for x in entry["notes"]]
            layers.append(entry)
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
                      dense_bits=32 * total_p, notes=notes)
