"""Builds the compiled parser, tcpfast._parse (metadata lives in pyproject.toml)."""

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


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
        [Extension("tcpfast._parse", ["tcpfast/_parse.pyx"], extra_compile_args=["-O3", "--param=max-inline-insns-single=1000", "--param=inline-unit-growth=400"])],
        language_level=3,
    ),
    cmdclass={"build_ext": BuildExtAlsoInSource},
)
