"""Private compute kernels of leechlib (Numba) and their plain-numpy references."""
