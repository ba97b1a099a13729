r"""The quantizer protocol: what every quantizer of leechlib offers.

:class:`Quantizer` is a runtime-checkable :class:`typing.Protocol`; nothing
inherits from it.  :class:`~leechlib.BallQuantizer`,
:class:`~leechlib.ShapeGainQuantizer`, :class:`~leechlib.baselines.E8Quantizer` and
:class:`~leechlib.baselines.ScalarQuantizer` follow it (a test checks that).  A new
quantizer follows it by having the same members with the same keyword-only
``workers`` argument.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Quantizer"]


@runtime_checkable
class Quantizer(Protocol):
    r"""What every quantizer of leechlib offers (a :class:`typing.Protocol`).

    :class:`BallQuantizer`, :class:`ShapeGainQuantizer`,
    :class:`~leechlib.baselines.E8Quantizer` and
    :class:`~leechlib.baselines.ScalarQuantizer` follow it, so code that compares
    them (benchmarks, :mod:`torch_ext`'s model quantization) needs no special cases.
    ``isinstance(q, Quantizer)`` checks that the members are there.

    Attributes
    ----------
    block_size : int
        Numbers per block: 24 (Leech), 8 (:math:`E_8`), 1 (scalar).  Inputs have
        shape ``(..., block_size)`` (any shape for ``block_size == 1``).
    size : int
        Number of codewords.
    bits : float
        Bits per block, ``log2(size)`` (an int for the scalar quantizer).
    bits_per_dim : float
        ``bits / block_size``.

    Methods
    -------
    fit(x, *, workers=None, ...)
        Fit the scale or levels to the blocks ``x``; returns ``self``.  Further
        keyword-only options (``max_points``, ``iters``) depend on the quantizer.
    encode(x, *, workers=None)
        Integer codes of the nearest codewords: one index per block
        (:class:`ShapeGainQuantizer`: a ``(shape, gain)`` pair per block, which
        :meth:`ShapeGainQuantizer.pack` makes one integer).
    decode(codes, *, workers=None)
        The codewords (float64) of codes.
    quantize(x, *, workers=None)
        ``decode(encode(x))``: the nearest codewords.
    prepare()
        Build the index tables now rather than on first use; returns ``self``.

    ``workers`` is scipy's convention everywhere: ``None`` or 1 one thread, ``-1``
    all cores.

    Examples
    --------
    >>> import numpy as np
    >>> from leechlib import BallQuantizer, Quantizer, ShapeGainQuantizer
    >>> from leechlib.baselines import E8Quantizer, ScalarQuantizer
    >>> qs = [BallQuantizer(), ShapeGainQuantizer(), E8Quantizer(), ScalarQuantizer(2)]
    >>> all(isinstance(q, Quantizer) for q in qs)
    True
    >>> [(q.block_size, round(q.bits, 3)) for q in qs]
    [(24, 47.997), (24, 47.587), (8, 15.796), (1, 2)]
    """

    block_size: int
    size: int

    @property
    def bits(self) -> float: ...

    @property
    def bits_per_dim(self) -> float: ...

    def fit(self, x, *, workers=None, **options) -> Quantizer: ...

    def encode(self, x, *, workers=None) -> np.ndarray: ...

    def decode(self, codes, *, workers=None) -> np.ndarray: ...

    def quantize(self, x, *, workers=None) -> np.ndarray: ...

    def prepare(self) -> Quantizer: ...
