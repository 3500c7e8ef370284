"""Builds the compiled modules (metadata: pyproject.toml): the /proc text parser
tcpfast.decode._parse, the sock_diag decoder tcpfast.decode._netlink, the key
set operations tcpfast.diff._keys and the line formatter tcpfast.outputs._format."""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# The parser's small field readers must be inlined into its line loop to be fast.
OPTIMIZE = ["-O3", "--param=max-inline-insns-single=1000", "--param=inline-unit-growth=400"]


class BuildExtAlsoInSource(build_ext):
    """Also put the built modules into the source tree.

    Python started in a checkout imports ./tcpfast before any installed copy;
    with the modules beside the sources it gets the compiled code, not a
    silent fallback.
    """

    def run(self) -> None:
        super().run()
        if all(os.path.exists(self.get_ext_fullpath(ext.name)) for ext in self.extensions):
            self.copy_extensions_to_source()


EXTENSIONS = cythonize(
    [Extension(f"tcpfast.{name}", [f"tcpfast/{name.replace('.', '/')}.pyx"],
               extra_compile_args=OPTIMIZE)
     for name in ("decode._parse", "decode._netlink", "diff._keys", "outputs._format")],
    language_level=3,
)
# Release wheels and the container image set TCPFAST_REQUIRE_COMPILED=1: there a
# module that fails to build must fail the build, not ship a wheel without it.
REQUIRE_COMPILED = os.environ.get("TCPFAST_REQUIRE_COMPILED", "") not in ("", "0")
for extension in EXTENSIONS:
    # Optional by default (set after cythonize, which does not carry it over):
    # without a C compiler the install still succeeds, and tcpfast runs on its
    # pure-Python code, saying so on stderr.
    extension.optional = not REQUIRE_COMPILED

setup(ext_modules=EXTENSIONS, cmdclass={"build_ext": BuildExtAlsoInSource})
