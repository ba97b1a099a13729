"""Run the Examples sections of the torch_ext modules written here as doctests.

The project's pytest ``testpaths`` cover ``leechlib`` doctests only; this keeps the
torch_ext examples honest in the default test run as well.
"""

import doctest
import importlib

import pytest

MODULES = [
    "torch_ext",
    "torch_ext.ops",
    "torch_ext.kernel",
    "torch_ext.attention",
    "torch_ext.losses",
    "torch_ext.model",
    "torch_ext._decoder",
]


@pytest.mark.parametrize("name", MODULES)
def test_module_examples(name, one_thread):
    mod = importlib.import_module(name)
    flags = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
    res = doctest.testmod(mod, optionflags=flags, verbose=False, report=False)
    assert res.failed == 0, f"{res.failed} of {res.attempted} examples failed in {name}"
    if name != "torch_ext._decoder":
        assert res.attempted > 0
