"""Sphinx configuration for leechlib."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import leechlib  # noqa: E402

project = "leechlib"
author = "leechlib developers"
copyright = "2026, leechlib developers"
release = leechlib.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "numpydoc",
]
try:  # optional niceties
    import sphinx_copybutton  # noqa: F401

    extensions.append("sphinx_copybutton")
except ImportError:  # pragma: no cover
    pass

autosummary_generate = True
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks = set()
templates_path = ["_templates"]
exclude_patterns = ["_build"]
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "scipy": ("https://docs.scipy.org/doc/scipy/", None),
    "torch": ("https://pytorch.org/docs/stable/", None),
}
# Build machines have no network: cross-links to numpy/scipy/torch are turned on
# only when LEECHLIB_DOCS_ONLINE=1 (inventories cannot be fetched otherwise).
if os.environ.get("LEECHLIB_DOCS_ONLINE") == "1":
    extensions.append("sphinx.ext.intersphinx")

try:
    import pydata_sphinx_theme  # noqa: F401

    html_theme = "pydata_sphinx_theme"
except ImportError:  # pragma: no cover
    html_theme = "alabaster"
html_title = "leechlib"
html_static_path = ["_static"]
