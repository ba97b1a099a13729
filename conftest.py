"""Repository-level pytest configuration: files that are not test modules."""

import importlib.util

collect_ignore = ["docs/conf.py", "setup.py"]
if importlib.util.find_spec("torch") is None:  # torch_ext doctests need torch
    collect_ignore.append("torch_ext")
