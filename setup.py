"""Build the one C extension; all other metadata lives in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "hotr._shim",
            [
                "src/hotr/_shim.c",
                "src/hotr/_deferred.c",
                "src/hotr/_elfcheck.c",
                "src/hotr/_guard.c",
                "src/hotr/_syscalls.c",
            ],
            depends=[
                "src/hotr/_deferred.h",
                "src/hotr/_elfcheck.h",
                "src/hotr/_guard.h",
                "src/hotr/_syscalls.h",
            ],
        )
    ]
)
