"""The optional C extension ``bot_bottle_dlp._runs`` (everything else is in
pyproject.toml). Without a compiler the build warns and the package installs
without it: the DLP views then find their runs in Python, with the same
findings, only slower."""

# pyright: reportMissingModuleSource=false
# (setuptools is a build requirement, not in the dev venv)

from __future__ import annotations

import os
import platform

from setuptools import Extension, setup
from setuptools.command.bdist_wheel import bdist_wheel


class _Wheel(bdist_wheel):
    """Tag the wheel ``manylinux_<glibc of this machine>``, not ``linux``.

    The extension uses libc only, so it runs on any glibc at least as new as
    the one it was built against; pip refuses a plain ``linux_*`` wheel when
    it downloads for another Python (the bundle image's wheelhouse)."""

    def get_tag(self) -> tuple[str, str, str]:
        python, abi, plat = super().get_tag()
        libc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
        if plat.startswith("linux_") and libc and libc.startswith("glibc "):
            major, minor = libc.split()[1].split(".")[:2]
            plat = f"manylinux_{major}_{minor}_{platform.machine()}"
        return python, abi, plat


setup(
    ext_modules=[
        Extension(
            "bot_bottle_dlp._runs",
            ["src/bot_bottle_dlp/_runs.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ],
    cmdclass={"bdist_wheel": _Wheel},
)
