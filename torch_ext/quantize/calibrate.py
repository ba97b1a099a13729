r"""Calibration of :func:`~torch_ext.quantize.quantize_model`: layer by layer, with a held-out guard.

The calibration batches are fed to the model once per group of layers, in the
order the model calls its layers (GPTQ's sequential scheme): each layer is
calibrated on the inputs that the *already quantized* earlier layers produce, and
only the current group's second moments are held in memory.  Layers called in a
row on the same input tensor (the query, key and value projections of an
attention block; the gate and up projections of a gated MLP) form one group and
share one pass.  The forward pass stops (by an internal exception) as soon as the
group has seen its inputs, so a pass costs only the part of the model up to the
group.

Held-out guard
--------------
The batches are split: every 4th batch (indices 3, 7, 11, ...; the last batch when
there are fewer than 4) is *held out*, the others *fit*.  With a single batch the
split is by token instead (every 4th token row).  Each layer is quantized twice,
with the calibration (``H_fit``: feedback and the weighted scale refit) and without
it, and keeps the one whose output error on the held-out inputs is lower.  That
error is measured per token relative to the token's output,

.. math::

    \frac{1}{T}\sum_t \frac{\|(W - \hat W) x_t\|^2}{\|W x_t\|^2 + \epsilon}
    = \operatorname{tr}\bigl((W - \hat W)\, H_{val}\, (W - \hat W)^\top\bigr),
    \qquad H_{val} = \frac{1}{T}\sum_t \frac{x_t x_t^\top}{\|W x_t\|^2 + \epsilon},

with :math:`\epsilon` 10\ :sup:`-6` of the mean squared output: every held-out
token counts alike, so that the few tokens with massive activations that some
pretrained transformers carry (the ``[CLS]`` token of BERT models, whose MLP
inputs hold a single channel hundreds of times the others' energy) cannot decide
for all the others.  The plain output error ``tr(ΔW H ΔWᵀ)`` with ``H = E[x xᵀ]``
is dominated by those tokens: on all-MiniLM-L6-v2 it prefers the calibrated MLP
down-projections, whose error on ordinary tokens is many times larger.

In a batch given as a dict with a 2-D ``attention_mask``, tokens whose mask is 0
(padding) are left out of every second moment.

Quantize and replace
--------------------
A :class:`CalibrationPlan` holds the model, its target layers and the
:class:`~torch_ext.quantize.QuantizeConfig`: it quantizes a layer
(:meth:`~torch_ext.quantize.LeechQuantizedLinear.from_linear`, with or without
the group's second moment), puts the result into the model and reports it to the
callback.  :meth:`CalibrationPlan.run` quantizes every target, through
:func:`calibrate_sequential` when there are calibration batches.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ._memory import free_memory
from .config import QuantizeConfig
from .layer import LeechQuantizedLinear, as_linear

__all__ = ["CalibrationError", "CalibrationPlan", "as_batches", "calibrate_sequential"]

#: a tensor given as ``data`` is cut into at most this many batches along dim 0
_TENSOR_CHUNKS = 8
#: relative floor of the per-token output energy in the held-out weighting
_REL_EPS = 1e-6
_GUARD = "relative"
_FIT = "plain"


class CalibrationError(ValueError):
    """A calibration batch or activation is unusable (the message names the batch or layer)."""


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the current group has its inputs."""


def as_batches(data) -> list:
    """The calibration batches of ``data``, as a list.

    ``data`` is a tensor (cut into at most 8 batches along its first dimension, so
    that some can be held out), a mapping of tensors such as a tokenizer's
    ``BatchEncoding`` (cut the same way, every tensor along its first dimension;
    each batch passed as keywords), a sequence that builds its batches as they are
    read (kept as it is, so that only one batch at a time is in memory), or an
    iterable of batches or a DataLoader (iterated once, into a list).

    Raises
    ------
    TypeError
        ``data`` is not a tensor, a mapping or an iterable (a string is refused).
    ValueError
        ``data`` holds no batch; a mapping whose tensors disagree on their first
        dimension, or with no tensor.

    Examples
    --------
    >>> import torch
    >>> from torch_ext.quantize.calibrate import as_batches
    >>> enc = {"input_ids": torch.zeros(16, 5, dtype=torch.long), "attention_mask": torch.ones(16, 5)}
    >>> b = as_batches(enc)
    >>> len(b), sorted(b[0]), tuple(b[0]["input_ids"].shape)
    (8, ['attention_mask', 'input_ids'], (2, 5))
    """
    if isinstance(data, Tensor):
        if data.ndim == 0:
            raise ValueError("data must have a batch dimension, got a 0-d tensor")
        batches = list(torch.chunk(data, min(_TENSOR_CHUNKS, max(1, data.shape[0])), dim=0))
    elif isinstance(data, Mapping):
        tensors = {k: v for k, v in data.items() if isinstance(v, Tensor)}
        if not tensors:
            raise ValueError(f"data is a {type(data).__name__} with no tensor (keys: {list(data)[:6]})")
        sizes = {k: (v.shape[0] if v.ndim else None) for k, v in tensors.items()}
        if len(set(sizes.values())) != 1 or None in sizes.values():
            raise ValueError(f"data: the tensors of the {type(data).__name__} must share their first "
                             f"(batch) dimension, got {sizes}")
        n = next(iter(sizes.values()))
        if n == 0:
            raise ValueError("data holds no calibration batch (its tensors have 0 rows)")
        chunks = min(_TENSOR_CHUNKS, n)
        parts = {k: torch.chunk(v, chunks, dim=0) for k, v in tensors.items()}
        m = min(len(p) for p in parts.values())
        batches = [{**{k: v for k, v in data.items() if k not in tensors},
                    **{k: parts[k][i] for k in tensors}} for i in range(m)]
    elif isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError("data must be a tensor, a mapping of tensors (a tokenizer's BatchEncoding), "
                        "an iterable of batches (tensors, tuples or dicts) or a DataLoader, got "
                        f"{type(data).__name__}")
    elif isinstance(data, Sequence) and not isinstance(data, (list, tuple)):
        batches = data  # a lazy sequence (built as it is read) stays lazy: read once per pass
    else:
        batches = list(data)
    if not len(batches):
        raise ValueError("data holds no calibration batch")
    return batches


def _held_out(n: int) -> list[bool]:
    """Which of ``n`` batches are held out: every 4th, at least one (none when n == 1)."""
    if n == 1:
        return [False]
    out = [i % 4 == 3 for i in range(n)]
    if not any(out):
        out[-1] = True
    return out


def _describe(b) -> str:
    if isinstance(b, Tensor):
        return f"tensor {b.dtype} {tuple(b.shape)}"
    if isinstance(b, Mapping):
        return f"{type(b).__name__} of " + ", ".join(f"{k}: {_describe(v)}" for k, v in list(b.items())[:4])
    if isinstance(b, (tuple, list)):
        return f"{type(b).__name__} of " + ", ".join(_describe(v) for v in list(b)[:4])
    return type(b).__name__


def _forward(model: nn.Module, b, i: int) -> None:
    """``model(b)`` as a tuple or mapping batch asks; a model error names the batch."""
    try:
        if isinstance(b, Mapping):
            model(**b)
        elif isinstance(b, (tuple, list)):
            model(*b)
        else:
            model(b)
    except (_Stop, CalibrationError):
        raise
    except Exception as exc:
        why = str(exc) or repr(exc)
        raise CalibrationError(f"calibration batch {i} ({_describe(b)}): the model failed on it: "
                               f"{type(exc).__name__}: {why}") from exc


def _mask_of(b):
    if isinstance(b, Mapping):
        m = b.get("attention_mask")
        if isinstance(m, Tensor) and m.ndim == 2:
            return m
    return None


def _probe(model: nn.Module, targets, batch, index: int):
    """Call order of the target layers on one batch, their calls per forward, and groups.

    Returns ``(groups, counts)``: lists of names of layers called consecutively on
    the same input tensor, in call order; and the calls of each layer.
    """
    order: list[str] = []
    counts = {n: 0 for n, _ in targets}
    shared: dict[str, bool] = {}
    prev = {"x": None}

    def hook_for(name):
        def hook(mod, args):
            x = args[0] if args else None
            if counts[name] == 0:
                order.append(name)
                shared[name] = x is not None and x is prev["x"]
            counts[name] += 1
            prev["x"] = x
        return hook

    hooks = [m.register_forward_pre_hook(hook_for(n)) for n, m in targets]
    try:
        _forward(model, batch, index)
    finally:
        for h in hooks:
            h.remove()
    groups: list[list[str]] = []
    for n in order:
        if groups and shared[n]:
            groups[-1].append(n)
        else:
            groups.append([n])
    return groups, counts


class _HeldOut:
    """The held-out second moment of one layer's input, ``H_val = R^T R / T``.

    While there are fewer held-out rows than inputs, the (weighted) rows ``R`` are
    kept rather than their ``n x n`` sum: 1 024 held-out tokens of a 5 632-input layer
    are 46 MB, the sum 254 MB.  Past ``n`` rows the sum is formed and added to.
    :meth:`loss` is ``tr(D H_val D^T)`` either way.
    """

    def __init__(self):
        self.rows: list[Tensor] = []
        self.n_rows = 0
        self.H = None
        self.n = 0

    def add(self, r: Tensor) -> None:
        """Add the rows ``r`` (``(t, n)``, float64, already weighted by ``sqrt(w_t)``)."""
        if self.H is None and self.n_rows + r.shape[0] <= r.shape[1]:
            self.rows.append(r.cpu())
            self.n_rows += r.shape[0]
        else:
            if self.H is None:
                R = torch.cat(self.rows) if self.rows else r[:0].cpu()
                self.H = (R.T @ R).cpu()
                self.rows = []
            self.H += (r.T @ r).cpu()
        self.n += r.shape[0]

    def finish(self) -> _HeldOut:
        if self.H is None:
            self.rows = [torch.cat(self.rows)] if self.rows else []
        return self

    def loss(self, D: Tensor) -> float:
        """``tr(D H_val D^T)`` of the ``(out, n)`` weight error ``D``."""
        if self.H is not None:
            return float(((D @ self.H) * D).sum()) / self.n
        if not self.rows:
            return 0.0
        return float((D @ self.rows[0].T).pow(2).sum()) / self.n


class _Moments:
    """Second moments of one group's input: ``H_fit`` (shared) and each member's ``H_val``."""

    def __init__(self, weights: dict[str, Tensor], split_tokens: bool):
        self.weights = weights  # name -> float64 (out, in) weight, original basis
        self.split_tokens = split_tokens
        self.fit = None
        self.n_fit = 0
        shared = _HeldOut() if _GUARD == "plain" else None
        self.val = {n: shared or _HeldOut() for n in weights}

    def add(self, x: Tensor, held_out: bool) -> None:
        if self.split_tokens:
            rows = torch.arange(x.shape[0], device=x.device) % 4 == 3
            self._add(x[~rows], False)
            self._add(x[rows], True)
        else:
            self._add(x, held_out)

    def _add(self, x: Tensor, held_out: bool) -> None:
        if x.shape[0] == 0:
            return
        if not held_out:
            if _FIT == "relative":
                W = next(iter(self.weights.values()))
                y2 = (x @ W.to(x.device).T).pow(2).sum(1)
                w = 1.0 / (y2 + _REL_EPS * y2.mean() + 1e-300)
                h = ((x * (w / w.mean())[:, None]).T @ x).cpu()
            else:
                h = (x.T @ x).cpu()
            self.fit = h if self.fit is None else self.fit.add_(h)
            self.n_fit += x.shape[0]
            return
        if _GUARD == "plain":
            next(iter(self.val.values())).add(x)
            return
        for n, W in self.weights.items():
            y2 = (x @ W.to(x.device).T).pow(2).sum(1)
            w = 1.0 / (y2 + _REL_EPS * y2.mean() + 1e-300)
            self.val[n].add(x * w.sqrt()[:, None])

    def result(self):
        """``(H_fit, {name: held-out moment or None})``, ``H_fit`` divided in place (called
        once: no second copy)."""
        fit = None if self.fit is None else self.fit.div_(self.n_fit)
        val = {n: (v.finish() if v.n else None) for n, v in self.val.items()}
        self.fit, self.val = None, {}
        return fit, val


def _accumulate(model, layers: dict[str, nn.Module], group: list[str], counts, batches, held,
                split_tokens: bool) -> _Moments:
    """Run the batches through ``model`` and collect the second moments of ``group``'s input."""
    first = group[0]
    mom = _Moments({n: as_linear(layers[n]).weight.detach().to(torch.float64) for n in group},
                   split_tokens)
    seen = {n: 0 for n in group}
    state = {"mask": None, "held": False}

    def hook_for(name):
        def hook(mod, args):
            seen[name] += 1
            if name == first:
                x = args[0].detach()
                x = x.reshape(-1, x.shape[-1]).to(torch.float64)
                m = state["mask"]
                if m is not None and tuple(args[0].shape[:-1]) == tuple(m.shape):
                    x = x[m.reshape(-1).to(x.device) != 0]
                if not bool(torch.isfinite(x).all()):
                    raise CalibrationError(f"layer {name!r}: its inputs contain NaN or inf on the "
                                           "calibration data (the model, or the layers quantized "
                                           "before it, produce non-finite activations)")
                mom.add(x, state["held"])
            if all(seen[n] >= counts[n] for n in group):
                raise _Stop
        return hook

    hooks = [layers[n].register_forward_pre_hook(hook_for(n)) for n in group]
    try:
        for i, b in enumerate(batches):
            for n in group:
                seen[n] = 0
            state["mask"], state["held"] = _mask_of(b), held[i]
            try:
                _forward(model, b, i)
            except _Stop:
                pass
    finally:
        for h in hooks:
            h.remove()
    return mom


def _val_loss(layer, W: Tensor, held: _HeldOut | None) -> float:
    if held is None:
        return float("nan")
    return held.loss(layer.dequantize(torch.float64).cpu() - W.cpu())


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    setattr(owner, child, new)


class CalibrationPlan:
    """Quantize the target layers of a model under one config, and put them in its place.

    Parameters
    ----------
    model : torch.nn.Module
    targets : list of (str, torch.nn.Module)
        The layers to quantize (``nn.Linear`` or ``Conv1D``), by their names in ``model``.
    config : QuantizeConfig
        How to quantize.  Without a second moment a layer is quantized with
        ``feedback="none"``; with one, with ``config.feedback`` (``None``: ``"ldlq"``).
    workers, cache
        As in :meth:`~torch_ext.quantize.LeechQuantizedLinear.from_linear`.
    callback : callable, optional
        ``callback(name, info)`` after each layer is replaced (see
        :func:`~torch_ext.quantize.quantize_model`).
    names : dict, optional
        The name to quantize and report each target under, when it differs from its
        name in ``model`` (the full name of a layer of a block run on its own: the
        rotation seeds derive from it).
    first_index, total : int, optional
        ``info["index"]`` of the first layer and ``info["total"]`` (default 0 and the
        number of targets), when the targets are part of a larger model.
    aliases : dict, optional
        ``{name: [other names]}``: a layer used at several places in the model;
        its quantized layer is put at every one of them.

    Attributes
    ----------
    done : list of str
        The layers replaced so far, in order.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from torch_ext.quantize import QuantizeConfig
    >>> from torch_ext.quantize.calibrate import CalibrationPlan
    >>> net = nn.Sequential(nn.Linear(24, 8), nn.ReLU(), nn.Linear(8, 4))
    >>> plan = CalibrationPlan(net, [("0", net[0])], QuantizeConfig(method="rtn"),
    ...                        callback=lambda n, i: print(n, i["index"], i["calibration"]))
    >>> plan.run()                       # no batches: quantized without calibration
    0 0 none
    ['0']
    >>> type(net[0]).__name__, type(net[2]).__name__
    ('LeechQuantizedLinear', 'Linear')
    """

    def __init__(self, model: nn.Module, targets, config: QuantizeConfig, *,
                 workers: int | None = -1, cache: bool | None = None,
                 callback: Callable[[str, dict], None] | None = None,
                 names: dict[str, str] | None = None, first_index: int = 0,
                 total: int | None = None, aliases: dict[str, list[str]] | None = None):
        if not isinstance(config, QuantizeConfig):
            raise TypeError(f"config must be a QuantizeConfig, got {type(config).__name__}")
        self.model = model
        self.targets = list(targets)
        self.aliases = dict(aliases or {})
        self.config = config
        self.workers, self.cache, self.callback = workers, cache, callback
        self.done: list[str] = []
        self.names = dict(names or {})
        self.first_index = first_index
        self.total = len(self.targets) if total is None else total
        # the configs of a layer without and with its second moment
        self._plain = (config if config.feedback == "none"
                       else dataclasses.replace(config, feedback="none"))
        self._calibrated = (config if config.feedback is not None
                            else dataclasses.replace(config, feedback="ldlq"))

    def quantize(self, name: str, linear: nn.Module, hessian: Tensor | None = None, *,
                 overwrite_hessian: bool = False) -> LeechQuantizedLinear:
        """``linear`` quantized, with its input second moment ``hessian`` if given
        (which the rotation may overwrite with ``overwrite_hessian``)."""
        return LeechQuantizedLinear.from_linear(
            linear, self._plain if hessian is None else self._calibrated, hessian=hessian,
            name=self.names.get(name, name), workers=self.workers, cache=self.cache,
            overwrite_hessian=overwrite_hessian)

    def replace(self, name: str, layer: LeechQuantizedLinear) -> None:
        """Put ``layer`` into the model as ``name`` (and its aliases), then call the callback."""
        _set_module(self.model, name, layer)
        others = self.aliases.get(name, [])
        for a in others:  # a layer used at several places: one quantized layer at each
            _set_module(self.model, a, layer)
        if others and not any("shared" in x for x in layer.stats.get("notes", [])):
            layer.stats.setdefault("notes", []).append(
                f"shared: the same layer is also used as {', '.join(repr(a) for a in others)}")
        index = self.first_index + len(self.done)
        self.done.append(name)
        if self.callback is None:
            return
        st = layer.stats
        info = {"index": index, "total": self.total, "mse": st["mse"],
                "seconds": st["seconds"], "bits_per_weight": layer.bits_report()["bits_per_weight"],
                "rotation": st["rotation"], "feedback": st["feedback"],
                "calibration": st.get("calibration", "none"), "notes": list(st["notes"])}
        for k in ("val_error", "damp", "damp_raised", "calibration_seconds"):
            if k in st:
                info[k] = st[k]
        self.callback(self.names.get(name, name), info)

    def run(self, batches: list | None = None) -> list[str]:
        """Quantize and replace every target; returns their names in that order.

        Without ``batches``, each layer in the order of ``targets``, without
        calibration (``stats["calibration"] == "none"``, no feedback whatever
        ``config.feedback`` says); with them, by :func:`calibrate_sequential`.
        """
        if batches is None:
            for n, m in self.targets:
                q = self.quantize(n, m)
                q.stats["calibration"] = "none"
                self.replace(n, q)
            return list(self.done)
        return calibrate_sequential(self, batches)


@torch.no_grad()
def calibrate_sequential(plan: CalibrationPlan, batches: list, *, calibrated: bool = True
                         ) -> list[str]:
    """Quantize ``plan.targets`` one group at a time on the current model's inputs.

    Each layer is quantized by ``plan.quantize`` (with the group's ``H_fit``, and
    without) and put into the model by ``plan.replace``.  With ``calibrated``, each
    layer keeps the quantization with the lower held-out error (module docstring);
    its ``stats`` get ``calibration`` (``"kept"``, ``"rejected"`` or ``"none"``)
    and ``val_error`` (``{"calibrated": e1, "plain": e0}``).  Layers the data never
    reaches are quantized without calibration, last.  Returns the names in the
    order they were quantized.
    """
    model, targets = plan.model, plan.targets
    layers = dict(targets)
    held = _held_out(len(batches))
    split_tokens = len(batches) == 1
    was = model.training
    model.eval()
    done: list[str] = []
    try:
        groups, counts = _probe(model, targets, batches[0], 0)
        reached = {n for g in groups for n in g}
        for group in groups + [[n] for n, _ in targets if n not in reached]:
            t0 = time.perf_counter()
            if group[0] in reached:
                mom = _accumulate(model, layers, group, counts, batches, held, split_tokens)
                H_fit, H_val = mom.result()
                del mom
                free_memory()  # the forward passes' frames, held by the stopping exceptions
            else:
                H_fit, H_val = None, {group[0]: None}
            t_cal = time.perf_counter() - t0
            for n in group:
                lin = layers[n]
                plain = plan.quantize(n, lin)
                stats = {"calibration_seconds": t_cal / len(group)}
                if H_fit is None or not calibrated:
                    q = plain
                    stats["calibration"] = "none"
                    if H_fit is None:
                        plain.stats.setdefault("notes", []).append(
                            "calibration: the data never reached this layer")
                else:
                    # the group's last use of H_fit: the rotation may work in its memory
                    cal = plan.quantize(n, lin, H_fit, overwrite_hessian=n == group[-1])
                    W = as_linear(lin).weight.detach().to("cpu", torch.float64)
                    e1, e0 = _val_loss(cal, W, H_val[n]), _val_loss(plain, W, H_val[n])
                    del W
                    keep = e1 <= e0
                    q = cal if keep else plain
                    stats.update(calibration="kept" if keep else "rejected",
                                 val_error={"calibrated": e1, "plain": e0},
                                 seconds=plain.stats["seconds"] + cal.stats["seconds"])
                    if not keep:
                        q.stats = {**q.stats, "feedback_stats": {k: cal.stats[k] for k in
                                   ("damp", "damp_raised", "dead_inputs") if k in cal.stats}}
                        q.stats.setdefault("notes", []).extend(cal.stats.get("notes", []))
                q.stats = {**q.stats, **stats}
                plan.replace(n, q)
                done.append(n)
                q = plain = cal = None  # the layer not kept goes now
                free_memory()
    finally:
        model.train(was)
    return done
