"""Does the frozen attention kernel change the model?  Prints the evidence.

Usage::

    python benchmarks/kernel_neutrality.py

Two ``FrozenKernelAttention`` modules (d_model 48, 2 heads) with the same value and
output weights and different frozen kernels see the same input; the table gives
the largest change of the attention scores and of the outputs.  The control row
rotates q and k inside each head's subspace, which must change nothing.  The same
set-up is asserted (with thresholds) in ``tests/torch/test_torch_kernel_attention.py``.
"""

from __future__ import annotations

import torch

from torch_ext import FrozenKernelAttention


def pair(kernel_a, kernel_b, *, seed_a=0, seed_b=0, shared=True, d=48, h=2):
    """Two attentions that differ only in their frozen kernel (same v/out weights).

    ``tests/torch/test_torch_kernel_attention.py`` uses this same function."""
    torch.manual_seed(0)
    a = FrozenKernelAttention(d, h, 32, kernel=kernel_a, kernel_seed=seed_a, shared_qk=shared)
    b = FrozenKernelAttention(d, h, 32, kernel=kernel_b, kernel_seed=seed_b, shared_qk=shared)
    b.load_state_dict(a.state_dict())
    return a.eval(), b.eval()


def main() -> None:
    x = torch.randn(4, 24, 48, generator=torch.Generator().manual_seed(3))
    rows = []
    cases = [
        ("Leech seed 0 vs seed 1", ("leech", "leech"), dict(seed_a=0, seed_b=1)),
        ("Leech vs identity", ("leech", "identity"), {}),
        ("Leech vs Haar-random", ("leech", "random"), {}),
        ("separate q/k kernels, seed 0 vs 7", ("leech", "leech"), dict(seed_b=7, shared=False)),
    ]
    with torch.no_grad():
        for name, (ka, kb), kw in cases:
            a, b = pair(ka, kb, **kw)
            ds = (a.scores(x) - b.scores(x)).nan_to_num(0.0).abs().max().item()
            do = (a(x) - b(x)).abs().max().item()
            rows.append((name, ds, do))
        a, _ = pair("leech", "leech")
        g = torch.Generator().manual_seed(5)
        rot = torch.stack([torch.linalg.qr(torch.randn(a.head_dim, a.head_dim, generator=g))[0]
                           for _ in range(a.n_head)])
        q, k, v = a.qkv(x)
        q2 = torch.einsum("hij,bhtj->bhti", rot, q)
        k2 = torch.einsum("hij,bhtj->bhti", rot, k)
        ds = (q @ k.transpose(-2, -1) - q2 @ k2.transpose(-2, -1)).abs().max().item()
        do = (a.merge(a.attend(q, k, v)) - a.merge(a.attend(q2, k2, v))).abs().max().item()
        rows.append(("control: rotation inside each head", ds, do))
        sc = a.scores(x)
        mean_score = sc[torch.isfinite(sc)].abs().mean().item()  # causal mask is -inf
    print("| comparison | max abs score diff | max abs output diff |")
    print("|---|---:|---:|")
    for name, ds, do in rows:
        print(f"| {name} | {ds:.3g} | {do:.3g} |")
    print(f"\nmean |score| for scale: {mean_score:.3g}")


if __name__ == "__main__":
    main()
