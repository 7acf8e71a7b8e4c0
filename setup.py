"""The compiled part of convmat: the exact kernels of ``convmat.spmm`` (``_native.c``).

Everything else is in ``pyproject.toml``.  The extension is optional: without a C compiler
convmat installs without it, and one-vector products before Numba is loaded run on the NumPy
twins of the kernels instead (the same bits, slower), products of several columns wait for Numba.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "convmat.spmm._native_lib",
            ["convmat/spmm/_native.c"],
            # The kernels' bits need every product and sum rounded once: no fused multiply-add,
            # no fast-math.  -O2 without -march: the same code on every x86-64 machine.
            extra_compile_args=["-O3", "-ffp-contract=off", "-fno-fast-math", "-DCONVMAT_CONTRACT_OFF"],
            libraries=["m"],  # fma() where the processor has no fused multiply-add
            optional=True,
        )
    ]
)
