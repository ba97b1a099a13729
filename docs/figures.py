"""Regenerate the figures of the documentation into ``docs/_static/``.

Usage::

    python docs/figures.py            # all figures
    python docs/figures.py mog nsm    # some of them

Deterministic (fixed seeds).  The rate--distortion figure takes a few minutes on
two cores; it prints the numbers it plots.
"""

import hashlib
import math
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import leechlib  # noqa: E402

OUT = os.path.join(HERE, "_static")
DPI = 110


def _save(fig, name):
    path = os.path.join(OUT, name)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    print(f"wrote {os.path.relpath(path)}")


def fig_mog():
    octad = set(int(i) for i in leechlib.GolayCode().octads()[0])
    labels = ["0", "1", "ω", "ω̄"]
    fig, ax = plt.subplots(figsize=(6.2, 3.3))
    for col in range(6):
        for row in range(4):
            i = 4 * col + row
            on = i in octad
            ax.add_patch(plt.Rectangle((col, 3 - row), 1, 1, facecolor="#f4a261" if on else "white",
                                       edgecolor="black", lw=1))
            ax.text(col + 0.5, 3 - row + 0.5, str(i), ha="center", va="center", fontsize=12,
                    fontweight="bold" if on else "normal")
    for row, lab in enumerate(labels):
        ax.text(-0.25, 3 - row + 0.5, lab, ha="right", va="center", fontsize=13)
    for col in range(6):
        ax.text(col + 0.5, 4.15, f"col {col}", ha="center", va="bottom", fontsize=9)
    for x in (2, 4):  # the three bricks
        ax.plot([x, x], [0, 4], color="black", lw=3)
    ax.set_xlim(-0.8, 6.1)
    ax.set_ylim(-0.1, 4.6)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"MOG coordinates (4·column + row); octad {sorted(octad)} shaded", fontsize=10)
    _save(fig, "fig_mog.png")


def fig_shells():
    th = leechlib.theta_series(14)
    k = np.arange(len(th))
    n = np.array(th, dtype=float)
    cum = np.cumsum(n)
    fig, ax = plt.subplots(figsize=(7, 4))
    nz = n > 0
    ax.bar(2 * k[nz], n[nz], width=1.4, color="#2a9d8f", label="shell size $N(2k)$")
    ax.plot(2 * k, cum, "o-", color="#e76f51", label="ball size (norm ≤ $2k$)")
    ax.axhline(2.0**48, color="black", ls="--", lw=1, label="$2^{48}$ (2 bits/dim)")
    ax.set_yscale("log")
    ax.set_xlabel("squared norm $2k$ (unit coordinates)")
    ax.set_ylabel("number of lattice vectors")
    ax.set_xticks(2 * k)
    ax.set_title("Leech lattice shells (theta series)")
    ax.legend(loc="lower right")
    ax.grid(True, which="major", axis="y", alpha=0.3)
    _save(fig, "fig_shells.png")
    print("  shells:", {2 * int(i): int(v) for i, v in zip(k, th, strict=False)})
    print(f"  ball norm<=26: {int(cum[13])} = 2^{math.log2(cum[13]):.4f}")


def _colour(points):
    """One RGB colour per lattice point, from a hash of its integer coordinates."""
    out = np.empty((len(points), 3))
    keys = np.rint(points * math.sqrt(8)).astype(np.int64)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    cols = np.empty((len(uniq), 3))
    for j, kk in enumerate(uniq):
        h = hashlib.sha1(kk.tobytes()).digest()
        cols[j] = 0.25 + 0.7 * np.frombuffer(h[:3], dtype=np.uint8) / 255.0
    out[:] = cols[inv.ravel()]
    return out, len(uniq)


def fig_slice(n=401, seed=2):
    L = leechlib.LeechLattice()
    mins = L.minimal_vectors()
    v = mins[0] / np.linalg.norm(mins[0])  # a minimal-vector direction
    # a generic direction orthogonal to it (seeded random vector, projected)
    w = np.random.default_rng(seed).standard_normal(24)
    w -= (w @ v) * v
    w /= np.linalg.norm(w)
    e = np.eye(24)
    panels = [("coordinates 0 and 1", e[0], e[1]),
              ("a minimal vector and a random orthogonal direction", v, w)]
    g = np.linspace(-3, 3, n)
    U, V = np.meshgrid(g, g)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.3))
    for ax, (title, e1, e2) in zip(axes, panels, strict=False):
        x = U.reshape(-1, 1) * e1 + V.reshape(-1, 1) * e2
        p = leechlib.nearest_point(x)
        rgb, k = _colour(p)
        ax.imshow(rgb.reshape(n, n, 3), origin="lower", extent=(-3, 3, -3, 3), interpolation="nearest")
        # lattice points lying in the plane: p with zero residual off the plane
        coef = np.stack([p @ e1, p @ e2], axis=1)
        resid = np.linalg.norm(p - coef[:, :1] * e1 - coef[:, 1:] * e2, axis=1)
        inplane = np.unique(np.round(coef[resid < 1e-9], 9), axis=0)
        inplane = inplane[(np.abs(inplane) <= 3 + 1e-9).all(axis=1)]
        ax.plot(inplane[:, 0], inplane[:, 1], "k.", ms=7)
        ax.set_title(f"{title}\n{k} cells met, {len(inplane)} lattice points in the plane (dots)", fontsize=10)
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
        ax.set_xlabel("u")
        ax.set_ylabel("v")
        print(f"  slice '{title}': {k} distinct nearest points, {len(inplane)} lattice points in the plane")
    fig.suptitle("Voronoi regions of Λ24 cut by a plane through 0 (colour = nearest lattice point)",
                 fontsize=11)
    _save(fig, "fig_slice.png")


def fig_nsm(n=10**6, chunk=50_000, seed=1):
    rng = np.random.default_rng(seed)
    G = leechlib.LeechLattice().generator_matrix()
    vals = []
    for _ in range(n // chunk):
        x = rng.random((chunk, 24)) @ G
        q = leechlib.nearest_point(x)
        vals.append(((x - q) ** 2).sum(axis=1) / 24.0)
    d = np.concatenate(vals)
    i = np.arange(1, n + 1)
    mean = np.cumsum(d) / i
    var = np.maximum(np.cumsum(d**2) / i - mean**2, 0)
    se = np.sqrt(var / i)
    idx = np.unique(np.geomspace(100, n, 400).astype(int)) - 1
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, lo, ylim in ((axes[0], 100, (0.0645, 0.0670)), (axes[1], 10**4, (0.06565, 0.06590))):
        j = idx[idx >= lo - 1]
        ax.fill_between(i[j], (mean - 2 * se)[j], (mean + 2 * se)[j], color="#8ecae6", alpha=0.6,
                        label="±2 s.e.")
        ax.plot(i[j], mean[j], color="#023047", label="running mean")
        ax.axhline(0.065753, color="#e76f51", ls="--", label="0.065753 (independent MC, 1.2·10⁸ points)")
        ax.axhline(0.065771, color="#2a9d8f", ls=":", lw=2, label="0.065771 (SPLAG Table 2.3)")
        ax.set_xscale("log")
        ax.set_ylim(*ylim)
        ax.set_xlabel("number of uniform points")
    axes[0].set_ylabel("mean ||x − Q(x)||² / 24")
    axes[0].set_title("NSM of Λ24 (volume 1): running estimate", fontsize=10)
    axes[1].set_title("zoom, 10⁴ points on", fontsize=10)
    axes[1].legend(loc="upper right", fontsize=8)
    _save(fig, "fig_nsm.png")
    print(f"  NSM over {n} points: {mean[-1]:.6f} ± {se[-1]:.6f} (1 s.e.)")


def fig_rate(n_fit=4000, n_test=10000, seed=0):
    from leechlib.baselines import E8Quantizer, ScalarQuantizer

    rng = np.random.default_rng(seed)
    xfit = rng.standard_normal((n_fit, 24))
    xtest = rng.standard_normal((n_test, 24))
    rows = {}

    def run(name, rate, fn):
        t = time.perf_counter()
        mse = float(fn())
        rows.setdefault(name, []).append((rate, mse))
        print(f"  {name:22s} R={rate:.4f}  MSE={mse:.5f}  ({time.perf_counter() - t:.1f} s)", flush=True)

    for b in (1, 2, 3):
        q = ScalarQuantizer(b, kind="lloyd-max").fit(xfit)
        run("Lloyd–Max scalar", q.bits_per_dim, lambda: np.mean((q.decode(q.encode(xtest)) - xtest) ** 2))
    for m in (4, 6, 8, 10):
        q = E8Quantizer(max_norm=m).fit(xfit.reshape(-1, 8))
        v = xtest.reshape(-1, 8)
        run("E8 ball", q.bits_per_dim, lambda: np.mean((q.decode(q.encode(v)) - v) ** 2))
    for b in (1.0, 1.5, 2.0):
        q = leechlib.BallQuantizer(bits_per_dim=b).fit(xfit)
        run("Leech ball", q.bits_per_dim, lambda: np.mean((q.quantize(xtest) - xtest) ** 2))
    for b in (1.0, 1.5, 2.0):
        q = leechlib.ShapeGainQuantizer(bits_per_dim=b).fit(xfit)
        run("Leech shape–gain", q.bits_per_dim, lambda: np.mean((q.quantize(xtest) - xtest) ** 2))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"Lloyd–Max scalar": "s-", "E8 ball": "^-", "Leech ball": "o-", "Leech shape–gain": "D-"}
    for name, pts in rows.items():
        r, d = np.array(pts).T
        ax.plot(r, d, styles[name], label=name)
    R = np.linspace(0.7, 3.05, 100)
    ax.plot(R, 2.0 ** (-2 * R), "k--", label="rate–distortion bound $2^{-2R}$")
    ax.set_yscale("log")
    ax.set_xlabel("rate R (bits per dimension)")
    ax.set_ylabel("MSE per dimension")
    ax.set_title(f"i.i.d. Gaussian source (fit {n_fit}, test {n_test} blocks of 24)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    _save(fig, "fig_rate.png")


FIGURES = {"mog": fig_mog, "shells": fig_shells, "slice": fig_slice, "nsm": fig_nsm, "rate": fig_rate}


def main(argv=None):
    names = (sys.argv[1:] if argv is None else argv) or list(FIGURES)
    os.makedirs(OUT, exist_ok=True)
    for name in names:
        t = time.perf_counter()
        FIGURES[name]()
        print(f"  [{name}: {time.perf_counter() - t:.1f} s]", flush=True)


if __name__ == "__main__":
    main()
