"""leechlib's kernels leave torch's CPU thread count as they found it."""

import os
import subprocess
import sys

CODE = """
import numpy as np, torch
from leechlib import nearest_point
x = np.random.default_rng(0).standard_normal((1000, 24))
before = torch.get_num_threads()
nearest_point(x)  # starts Numba's threading layer, on all cores
after = torch.get_num_threads()
torch.set_num_threads(2)
nearest_point(x, workers=1)
print(before, after, torch.get_num_threads())
"""


def test_a_leechlib_call_keeps_torch_thread_count():
    # Numba's OpenMP layer shares the OpenMP runtime with torch: starting it, or
    # restoring Numba's own count after a call, used to leave torch on Numba's count
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", "2"]
