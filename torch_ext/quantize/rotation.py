r"""Incoherence rotations of quantized layers: randomized Hadamard transforms stored as seeds.

A layer ``y = W x + b`` is quantized in a rotated basis: with orthogonal ``T_in``
(``in_features``) and ``T_out`` (``out_features``, identity unless
``rotation="hadamard-both"``) the stored weight is

.. math::

    W' = T_{out}\, W\, T_{in}^\top, \qquad y = T_{out}^\top\, \hat W' (T_{in} x) + b,

so the layer computes the same function with any ``W'``, and the quantization error
``T_out (W − Ŵ) T_inᵀ`` is spread over all coordinates (no input or output carries
outsized energy: *incoherence processing*, QuIP#, LLVQ).  The input second moment
rotates with the activations, ``H' = T_in H T_inᵀ``.  ``T`` is
:class:`~torch_ext.quantize.hadamard.RandomizedHadamard`: a Sylvester–Hadamard transform on
the power-of-two factor of the size, Kronecker a seeded Haar-random orthogonal
matrix on its odd part (at most :data:`~torch_ext.quantize.hadamard.MAX_ODD`), times random
signs; applied in ``O(n log n)`` and stored as an integer seed, never as a matrix.

Rotations
---------
``"none"``
    The weight as it is.
``"hadamard"``
    Input side only (``T_out = I``).
``"hadamard-both"``
    Input and output sides.

The seeds of a layer are derived from a user seed and the layer's name
(:func:`layer_seeds`), so two layers never share a transform and a run is
reproducible.  A side whose size has an odd part above ``MAX_ODD`` cannot be
rotated: :func:`plan_rotation` falls back (``"hadamard-both"`` to ``"hadamard"``,
``"hadamard"`` to ``"none"``) and says why.

Examples
--------
>>> import torch
>>> from torch_ext.quantize.rotation import LayerRotation, layer_seeds, plan_rotation
>>> layer_seeds(0, "h.0.mlp.c_fc") == layer_seeds(0, "h.0.mlp.c_fc") != layer_seeds(1, "h.0.mlp.c_fc")
True
>>> plan_rotation("hadamard-both", 1031, 96)      # 1031 is a prime above MAX_ODD
('none', 'rotation: in_features 1031 has odd part 1031 > 1023, not rotated')
>>> R = LayerRotation("hadamard-both", 48, 24, seeds=(5, 6))
>>> W = torch.randn(24, 48, dtype=torch.float64)
>>> bool(torch.allclose(R.unrotate_weight(R.rotate_weight(W)), W))
True
"""

from __future__ import annotations

import hashlib
import numbers

from torch import Tensor

from .feedback import transpose_in_place
from .hadamard import MAX_ODD, RandomizedHadamard

__all__ = ["ROTATIONS", "check_rotation", "layer_seeds", "plan_rotation", "LayerRotation"]

#: the rotations of :func:`~torch_ext.quantize.quantize_model`
ROTATIONS = ("none", "hadamard", "hadamard-both")


def check_rotation(rotation) -> str:
    """``rotation`` if it is one of :data:`ROTATIONS`; ``ValueError`` otherwise."""
    if not isinstance(rotation, str) or rotation not in ROTATIONS:
        raise ValueError(f"rotation must be one of {ROTATIONS}, got {rotation!r}")
    return rotation


def layer_seeds(seed: int, name: str) -> tuple[int, int]:
    """The seeds ``(input side, output side)`` of the layer ``name`` under the user ``seed``.

    A hash of both (SHA-256), reduced to 31 bits: stable across machines and
    Python versions (unlike ``hash``).
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    out = []
    for side in ("in", "out"):
        h = hashlib.sha256(f"leechlib-rotation:{int(seed)}:{name}:{side}".encode()).digest()
        out.append(int.from_bytes(h[:8], "little") & 0x7FFFFFFF)
    return out[0], out[1]


def _odd(n: int) -> int:
    return n // (n & -n)


def plan_rotation(rotation: str, in_features: int, out_features: int) -> tuple[str, str | None]:
    """The rotation a layer of this shape can have, and a note if it is not ``rotation``."""
    rotation = check_rotation(rotation)
    if rotation == "none":
        return rotation, None
    if _odd(in_features) > MAX_ODD:
        return "none", (f"rotation: in_features {in_features} has odd part {_odd(in_features)} "
                        f"> {MAX_ODD}, not rotated")
    if rotation == "hadamard-both" and _odd(out_features) > MAX_ODD:
        return "hadamard", (f"rotation: out_features {out_features} has odd part "
                            f"{_odd(out_features)} > {MAX_ODD}, input side only")
    return rotation, None


class LayerRotation:
    """The transforms of one layer: ``T_in`` and ``T_out`` (``None`` where not rotated).

    Parameters
    ----------
    rotation : {"none", "hadamard", "hadamard-both"}
    in_features, out_features : int
    seeds : (int, int)
        Seeds of ``T_in`` and ``T_out``.

    Raises
    ------
    ValueError
        A side that cannot be rotated (odd part above ``MAX_ODD``; use
        :func:`plan_rotation` first), or a bad argument.
    """

    def __init__(self, rotation: str, in_features: int, out_features: int,
                 seeds: tuple[int, int] = (0, 0)):
        self.kind = check_rotation(rotation)
        try:
            s_in, s_out = (int(s) for s in seeds)
        except (TypeError, ValueError):
            raise ValueError(f"rotation seeds must be two ints, got {seeds!r}") from None
        self.seeds = (s_in, s_out)
        self.t_in = RandomizedHadamard(in_features, s_in) if self.kind != "none" else None
        self.t_out = RandomizedHadamard(out_features, s_out) if self.kind == "hadamard-both" else None

    def __repr__(self) -> str:
        return f"LayerRotation({self.kind!r}, seeds={self.seeds})"

    def rotate_weight(self, W: Tensor) -> Tensor:
        """``T_out W T_inᵀ`` of an ``(out, in)`` weight."""
        if self.t_in is not None:
            W = self.t_in.apply(W)  # each row w -> T_in w
        if self.t_out is not None:
            W = self.t_out.apply(W.T).T
        return W

    def unrotate_weight(self, W: Tensor) -> Tensor:
        """``T_outᵀ W T_in``: the weight in the original basis."""
        if self.t_out is not None:
            W = self.t_out.inverse(W.T).T
        if self.t_in is not None:
            W = self.t_in.inverse(W)
        return W

    def rotate_hessian(self, H: Tensor, *, overwrite: bool = False) -> Tensor:
        """``T_in H T_inᵀ`` of a symmetric ``(in, in)`` second moment.

        ``overwrite=True``: ``H`` may be rotated in its own memory (a contiguous CPU
        float tensor is, where leechlib's kernel does the transform; the same values
        as a new one), which saves two ``n x n`` arrays; ``H`` then holds the result
        and is returned.
        """
        if self.t_in is None:
            return H
        if overwrite and self.t_in.apply_(H):
            transpose_in_place(H.numpy())
            self.t_in.apply_(H)  # the same tensor as the first pass: it applies again
            return H
        return self.t_in.apply(self.t_in.apply(H).T)

    def inputs(self, x: Tensor) -> Tensor:
        """``T_in x`` along the last dimension (identity without rotation)."""
        return x if self.t_in is None else self.t_in.apply(x)

    def outputs(self, y: Tensor) -> Tensor:
        """``T_outᵀ y`` along the last dimension (identity unless both sides are rotated)."""
        return y if self.t_out is None else self.t_out.inverse(y)

    @property
    def active(self) -> bool:
        """Whether any side is rotated."""
        return self.kind != "none"

    def to_config(self) -> dict:
        """``{"rotation": kind, "rotation_seeds": [in, out]}`` (JSON-able)."""
        return {"rotation": self.kind, "rotation_seeds": list(self.seeds)}

