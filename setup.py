"""Builds the compiled modules tcpfast._parse and tcpfast._keys (metadata: pyproject.toml)."""

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


# The parser's small field readers must be inlined into its line loop to be fast.
OPTIMIZE = ["-O3", "--param=max-inline-insns-single=1000", "--param=inline-unit-growth=400"]


class BuildExtAlsoInSource(build_ext):
    """Also put the built module into the source tree.

    Python started in a checkout imports ./tcpfast before any installed copy;
    with the module beside the sources it gets the compiled parser, not a
    silent fallback.
    """

    def run(self) -> None:
        super().run()
        self.copy_extensions_to_source()


setup(
    ext_modules=cythonize(
        [Extension(f"tcpfast.{name}", [f"tcpfast/{name}.pyx"], extra_compile_args=OPTIMIZE)
         for name in ("_parse", "_keys")],
        language_level=3,
    ),
    cmdclass={"build_ext": BuildExtAlsoInSource},
)
