"""Build scorewire's compiled scoring kernel (ext/ -> scorewire.backends._kernel, scorewire.grpc._wire).

Modelled on scikit-learn's setuptools path:

* global Cython directives: no bounds checks, no negative indexing, C division;
* ``SCOREWIRE_DEBUG_KERNEL=1`` turns bounds checks back on (and builds -O0 -g);
* OpenMP is probed with a tiny test program and used when the compiler and its
  runtime link it; otherwise the kernel is built single-threaded and a loud warning
  says so (scoring stays correct, only large batches lose their parallel speed-up);
* no ``-march``: the build targets the baseline of its platform (x86-64: SSE2). The
  AVX2+FMA functions in ``ext/_simd.h`` are compiled for that instruction set alone
  (a function attribute) and chosen at run time. The headers in ext/ ship in the
  sdist (MANIFEST.in).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("SCOREWIRE_DEBUG_KERNEL", "0") not in ("", "0")

OPENMP_TEST = textwrap.dedent(
    """
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return omp_get_max_threads() > 0 && n > 0 ? 0 : 1;
    }
    """
)


def _openmp_flags() -> list[str]:
    """Return the compile/link flag for OpenMP, or [] when it does not build and run."""
    if os.environ.get("SCOREWIRE_NO_OPENMP", "0") not in ("", "0"):
        return []
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        cc = "cc"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp.c")
        exe = os.path.join(tmp, "omp")
        with open(src, "w") as fh:
            fh.write(OPENMP_TEST)
        try:
            subprocess.run(
                [cc, "-fopenmp", src, "-o", exe],
                check=True,
                capture_output=True,
            )
            subprocess.run([exe], check=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return []
    return ["-fopenmp"]


openmp = _openmp_flags()
if not openmp:
    warnings.warn(
        "\n" + "*" * 72 + "\n"
        "scorewire: OpenMP is NOT available with this compiler. The scoring kernel\n"
        "is built single-threaded: results are identical, large batches are slower.\n"
        "Install a compiler with OpenMP support (gcc + libgomp) and rebuild.\n"
        + "*" * 72,
        stacklevel=1,
    )

extra_compile = ["-O0", "-g"] if DEBUG else ["-O3"]
extra_compile += ["-fno-math-errno", *openmp]
if sys.platform != "win32":
    extra_compile.append("-Wno-unreachable-code")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "nonecheck": False,
    "embedsignature": True,
}

extensions = [
    Extension(
        "scorewire.backends._kernel",
        sources=[os.path.join("ext", "_kernel.pyx")],
        depends=[os.path.join("ext", "_simd.h"), os.path.join("ext", "_pool.h")],
        include_dirs=["ext", np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        extra_compile_args=extra_compile,
        extra_link_args=list(openmp),
    ),
    Extension(
        "scorewire.grpc._wire",
        sources=[os.path.join("ext", "_wire.pyx")],
        include_dirs=["ext", np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        extra_compile_args=extra_compile,
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
    ),
)
