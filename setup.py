"""The one compiled part: the RTP fan-out (mcu/_fanout.c). Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("mcu._fanout", sources=["mcu/_fanout.c"],
                  extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                      "-Wno-missing-field-initializers"]),
    ],
)
