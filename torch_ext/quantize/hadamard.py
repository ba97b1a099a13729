r"""Randomized Hadamard transforms: seeded orthogonal rotations applied in O(n log n).

Incoherence processing (QuIP#, LLVQ) rotates a weight matrix so that no input
(or output) direction carries outsized energy before it is quantized, and applies the
same rotation to the activations at inference.  The rotation is stored as a seed,
never as a dense matrix.

For a length ``n = 2**k * m`` with ``m`` odd, the transform is

.. math::

    T = \bigl(\tfrac{1}{\sqrt{2^k}} H_{2^k} \otimes Q_m\bigr)\, D,

with ``D`` a diagonal of random signs, ``H_{2^k}`` the Sylvester–Hadamard matrix and
``Q_m`` a Haar-random ``m × m`` orthogonal matrix (``Q_1 = [1]``).  A vector is
multiplied by ``D``, viewed as a ``2**k × m`` array (row-major), transformed by a fast
Walsh–Hadamard transform along the first axis and by ``Q_m`` along the second.  ``T`` is
orthogonal, so its inverse is its transpose.  Both ``D`` and ``Q_m`` are drawn from
``numpy.random.default_rng([seed, n])``: the same seed gives the same transform on every
machine (``Q_m`` up to rounding of the QR factorization).  On the CPU, for float32 and
float64 tensors that need no gradient and an odd part of at most
:data:`NATIVE_MAX_ODD`, the whole transform is one native pass per row
(:func:`leechlib.kernels.hadamard_rows`); elsewhere it is a chain of torch operations.  ``m`` is at most
:data:`MAX_ODD`; sizes whose odd part is larger (a prime ``n``, say) raise
``ValueError``.

Examples
--------
>>> import torch
>>> from torch_ext.quantize.hadamard import RandomizedHadamard
>>> T = RandomizedHadamard(384, seed=0)          # 384 = 128 * 3
>>> x = torch.randn(5, 384, dtype=torch.float64)
>>> y = T.apply(x)
>>> bool(torch.allclose(T.inverse(y), x)), bool(torch.allclose(y.norm(dim=-1), x.norm(dim=-1)))
(True, True)
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import torch
from torch import Tensor

from leechlib.kernels import hadamard_rows

__all__ = ["MAX_ODD", "RandomizedHadamard", "fwht"]

#: largest odd part ``m`` of a size ``2**k * m`` that gets a dense ``m × m`` factor
MAX_ODD = 1023
#: largest odd part transformed by the native pass on the CPU (``benchmarks/bench_qmatmul.py``:
#: 1.6-4.4 times the torch operations for n = 4096, 1536, 384, batch 1-16; slower for 11008 = 256 * 43)
NATIVE_MAX_ODD = 15


def fwht(x: Tensor, dim: int = -1) -> Tensor:
    """Orthonormal fast Walsh–Hadamard transform of ``x`` along ``dim``.

    Parameters
    ----------
    x : torch.Tensor
        Floating-point tensor whose size along ``dim`` is a power of two.
    dim : int
        The axis to transform.

    Returns
    -------
    torch.Tensor
        ``H x / sqrt(n)`` along ``dim`` (``H`` the Sylvester–Hadamard matrix): an
        orthogonal, symmetric transform, its own inverse.

    Examples
    --------
    >>> import torch
    >>> from torch_ext.quantize.hadamard import fwht
    >>> fwht(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    tensor([0.5000, 0.5000, 0.5000, 0.5000])
    >>> x = torch.randn(3, 8, dtype=torch.float64)
    >>> bool(torch.allclose(fwht(fwht(x)), x))
    True
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    n = x.shape[dim]
    if n < 1 or n & (n - 1):
        raise ValueError(f"the size of x along dim must be a power of two, got {n}")
    y = x.movedim(dim, -1)
    lead = y.shape[:-1]
    y = y.reshape(-1, n)
    h = 1
    while h < n:
        y = y.view(-1, n // (2 * h), 2, h)
        a, b = y[:, :, 0, :], y[:, :, 1, :]
        y = torch.stack((a + b, a - b), dim=2).view(-1, n)
        h *= 2
    y = y * (1.0 / math.sqrt(n))
    return y.view(*lead, n).movedim(-1, dim)


def _split(n: int) -> tuple[int, int]:
    """``n = p * m`` with ``p`` a power of two and ``m`` odd."""
    p = n & -n
    return p, n // p


@functools.lru_cache(maxsize=64)
def _factors(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random signs (n,) and the odd-part orthogonal factor (m, m), float64, read-only."""
    p, m = _split(n)
    rng = np.random.default_rng([seed, n])
    signs = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    if m == 1:
        q = np.ones((1, 1))
    else:
        a = rng.standard_normal((m, m))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))[None, :]  # Haar measure (Mezzadri 2007)
    signs.setflags(write=False)
    q.setflags(write=False)
    return signs, q


class RandomizedHadamard:
    """The seeded orthogonal transform ``T`` of size ``n`` (see the module docstring).

    Parameters
    ----------
    n : int
        Vector length, ``2**k * m`` with odd ``m <= MAX_ODD``.
    seed : int
        Non-negative seed; ``(seed, n)`` fixes the transform.

    Attributes
    ----------
    n, seed : int
    power, odd : int
        ``n = power * odd``.

    Examples
    --------
    >>> import torch
    >>> from torch_ext.quantize.hadamard import RandomizedHadamard
    >>> T = RandomizedHadamard(24, seed=3)
    >>> M = T.matrix()
    >>> bool(torch.allclose(M @ M.T, torch.eye(24, dtype=torch.float64)))
    True
    """

    def __init__(self, n: int, seed: int = 0):
        for name, v in (("n", n), ("seed", seed)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.n, self.seed = int(n), int(seed)
        self.power, self.odd = _split(self.n)
        if self.odd > MAX_ODD:
            raise ValueError(
                f"n={n} = {self.power} * {self.odd}: the odd part exceeds {MAX_ODD}, so there is "
                "no fast randomized Hadamard transform of this size (use no rotation)"
            )
        self._cache: dict = {}

    def __repr__(self) -> str:
        return f"RandomizedHadamard(n={self.n}, seed={self.seed})"

    def _tables(self, device, dtype) -> tuple[Tensor, Tensor]:
        key = (str(device), dtype)
        t = self._cache.get(key)
        if t is None:
            signs, q = _factors(self.n, self.seed)
            t = (torch.tensor(signs, dtype=dtype, device=device),
                 torch.tensor(q, dtype=dtype, device=device))
            self._cache[key] = t
        return t

    def _kernel_applies(self, x: Tensor) -> bool:
        """Whether leechlib's kernel can transform ``x`` (CPU, float32/float64, an odd part
        up to :data:`NATIVE_MAX_ODD`: above it the dense ``m × m`` factor is a matrix
        product that BLAS does faster than the kernel's loops)."""
        return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
                and self.odd <= NATIVE_MAX_ODD)

    def _run_kernel(self, y: Tensor, inverse: bool) -> bool:
        """Transform the rows of the C-contiguous ``y`` in place by leechlib's kernel;
        ``False`` (``y`` untouched) without Numba."""
        key = ("np", y.dtype)
        t = self._cache.get(key)
        if t is None:
            signs, q = _factors(self.n, self.seed)
            dt = np.float32 if y.dtype == torch.float32 else np.float64
            t = (np.ascontiguousarray(signs, dtype=dt), np.ascontiguousarray(q, dtype=dt))
            self._cache[key] = t
        try:
            hadamard_rows(y.detach().reshape(-1, self.n).numpy(), *t, inverse=inverse,
                          workers=torch.get_num_threads())
        except ImportError:  # no Numba here: the torch operations (which never need it)
            return False
        return True

    def _native(self, x: Tensor, inverse: bool) -> Tensor | None:
        """The transform by leechlib's kernel (no gradient), or None."""
        if not self._kernel_applies(x) or (torch.is_grad_enabled() and x.requires_grad):
            return None
        y = x.reshape(-1, self.n).clone(memory_format=torch.contiguous_format)
        return y.reshape(x.shape) if self._run_kernel(y, inverse) else None

    def apply_(self, x: Tensor) -> bool:
        """``T x`` in place, for a C-contiguous CPU float32/float64 ``x`` of shape
        ``(..., n)`` without gradient (leechlib's kernel); ``False`` (``x`` untouched)
        where that kernel does not apply: use :meth:`apply`."""
        self._check(x)
        if not self._kernel_applies(x) or x.requires_grad or not x.is_contiguous():
            return False
        return self._run_kernel(x, inverse=False)

    def _check(self, x) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
        if x.ndim == 0 or x.shape[-1] != self.n:
            raise ValueError(f"x must have last dimension {self.n}, got shape {tuple(x.shape)}")

    def apply(self, x: Tensor) -> Tensor:
        """``T x`` for every vector along the last dimension of ``x``.

        Parameters
        ----------
        x : torch.Tensor, shape (..., n)

        Returns
        -------
        torch.Tensor, shape (..., n)
            Same dtype and device as ``x``.
        """
        self._check(x)
        native = self._native(x, inverse=False)
        if native is not None:  # one native pass per row (CPU)
            return native
        return self._apply_torch(x)

    def _apply_torch(self, x: Tensor) -> Tensor:
        """``T x`` with torch operations (any device, differentiable)."""
        signs, q = self._tables(x.device, x.dtype)
        y = (x * signs).reshape(*x.shape[:-1], self.power, self.odd)
        if self.power > 1:
            y = fwht(y, dim=-2)
        if self.odd > 1:
            y = y @ q.T
        return y.reshape(x.shape)

    def inverse(self, y: Tensor) -> Tensor:
        """``T⁻¹ y = Tᵀ y`` along the last dimension of ``y``.

        Parameters
        ----------
        y : torch.Tensor, shape (..., n)

        Returns
        -------
        torch.Tensor, shape (..., n)
        """
        self._check(y)
        native = self._native(y, inverse=True)
        if native is not None:
            return native
        return self._inverse_torch(y)

    def _inverse_torch(self, y: Tensor) -> Tensor:
        """``Tᵀ y`` with torch operations (any device, differentiable)."""
        signs, q = self._tables(y.device, y.dtype)
        x = y.reshape(*y.shape[:-1], self.power, self.odd)
        if self.odd > 1:
            x = x @ q
        if self.power > 1:
            x = fwht(x, dim=-2)
        return x.reshape(y.shape) * signs

    def matrix(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The dense ``n × n`` matrix of ``T`` (for tests and small sizes only)."""
        return self.apply(torch.eye(self.n, dtype=dtype)).T
