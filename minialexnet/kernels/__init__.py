"""Hot loops, three times over, with the same file and function names in each folder:

- ``kernels/numpy/``: the readable reference (plain NumPy, step through it in a debugger);
- ``kernels/cpu/``:   Numba ``@njit`` twins, compiled once and cached on disk;
- ``kernels/cuda/``:  numba.cuda twins that run on device arrays, one thread per output.

The CPU layers fetch the current backend's module with ``minialexnet.backend.kernels()``.
"""
