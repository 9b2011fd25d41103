"""Build hook for the optional C extension; all metadata lives in setup.cfg.

``homeserver.state._speedups`` holds the state resolution kernels. It is
optional: if it cannot be compiled, the build warns and Estuary runs the
pure-Python twin (``homeserver/state/_pure.py``). With ``ESTUARY_REQUIRE_C=1``
a failed compilation fails the build instead.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """``build_ext`` that degrades to pure Python when compilation fails."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - any toolchain failure
            self._give_up(e)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001 - any toolchain failure
            self._give_up(e)

    def _give_up(self, error: Exception) -> None:
        if os.environ.get("ESTUARY_REQUIRE_C") == "1":
            raise error
        sys.stderr.write(
            "WARNING: could not build the state resolution C extension (%s); "
            "the pure-Python implementation will be used.\n" % (error,)
        )


setup(
    ext_modules=[
        Extension(
            "homeserver.state._speedups",
            sources=["homeserver/state/_speedups.c"],
            extra_compile_args=["-O2", "-std=c99", "-Wall", "-Wno-missing-field-initializers"],
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
