"""Randomized Hadamard transforms: orthogonal, exact inverses, the stated construction."""

import numpy as np
import pytest
import scipy.linalg
import torch

from torch_ext.quantize.hadamard import MAX_ODD, RandomizedHadamard, _factors, fwht


@pytest.mark.parametrize("n", [1, 2, 8, 64, 1024])
def test_fwht_is_the_normalised_sylvester_matrix(n):
    x = torch.randn(3, n, dtype=torch.float64)
    H = torch.from_numpy(scipy.linalg.hadamard(n).astype(np.float64)) / np.sqrt(n)
    assert torch.allclose(fwht(x), x @ H.T, atol=1e-12)
    assert torch.allclose(fwht(fwht(x)), x, atol=1e-12)


def test_fwht_along_another_dim():
    x = torch.randn(4, 16, 3, dtype=torch.float64)
    got = fwht(x, dim=1)
    want = fwht(x.transpose(1, 2)).transpose(1, 2)
    assert torch.allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("n", [1, 3, 24, 96, 384, 1536])
def test_transform_is_orthogonal_and_matches_its_construction(n):
    T = RandomizedHadamard(n, seed=7)
    M = T.matrix()
    assert torch.allclose(M @ M.T, torch.eye(n, dtype=torch.float64), atol=1e-10)
    signs, q = _factors(n, 7)
    p = n // q.shape[0]
    H = scipy.linalg.hadamard(p).astype(np.float64) / np.sqrt(p)
    want = np.kron(H, q) @ np.diag(signs)
    assert np.allclose(M.numpy(), want, atol=1e-12)


@pytest.mark.parametrize("n", [384, 3072, 11008])  # 128*3, 1024*3, 256*43
def test_inverse_is_exact_and_norms_are_kept(n):
    T = RandomizedHadamard(n, seed=1)
    x = torch.randn(6, n, dtype=torch.float64)
    y = T.apply(x)
    assert torch.allclose(T.inverse(y), x, atol=1e-10)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-12)
    # a coherent vector (one spike) is spread out: no coordinate keeps most of the energy
    e = torch.zeros(n, dtype=torch.float64)
    e[5] = 1.0
    assert float(T.apply(e).abs().max()) < 0.5


def test_float32_and_batch_shapes():
    T = RandomizedHadamard(48, seed=0)
    x = torch.randn(2, 3, 48)
    y = T.apply(x)
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert torch.allclose(T.inverse(y), x, atol=1e-5)


def test_seeds_fix_the_transform():
    a, b, c = RandomizedHadamard(96, 3), RandomizedHadamard(96, 3), RandomizedHadamard(96, 4)
    assert torch.equal(a.matrix(), b.matrix())
    assert not torch.allclose(a.matrix(), c.matrix())


def test_bad_input():
    with pytest.raises(ValueError, match="odd part"):
        RandomizedHadamard(1031, 0)  # prime > MAX_ODD
    assert MAX_ODD >= 43
    with pytest.raises(ValueError, match="n must be"):
        RandomizedHadamard(0)
    with pytest.raises(ValueError, match="seed"):
        RandomizedHadamard(8, -1)
    with pytest.raises(TypeError, match="n must be an int"):
        RandomizedHadamard(8.0)
    T = RandomizedHadamard(8)
    with pytest.raises(ValueError, match="last dimension 8"):
        T.apply(torch.zeros(3, 9))
    with pytest.raises(TypeError, match="floating-point"):
        T.apply(torch.zeros(3, 8, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        T.apply(np.zeros(8))
    with pytest.raises(ValueError, match="power of two"):
        fwht(torch.zeros(6))


@pytest.mark.parametrize("n", [1, 24, 384, 96 * 7, 2 ** 10])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_pass_agrees_with_the_torch_operations(n, dtype):
    from torch_ext.quantize.hadamard import RandomizedHadamard

    T = RandomizedHadamard(n, seed=5)
    x = torch.randn(3, 2, n, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    with torch.no_grad():
        torch.testing.assert_close(T.apply(x), T._apply_torch(x), rtol=tol, atol=tol)
        torch.testing.assert_close(T.inverse(x), T._inverse_torch(x), rtol=tol, atol=tol)
    xg = x.clone().requires_grad_()  # a gradient: the torch operations
    T.apply(xg).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
