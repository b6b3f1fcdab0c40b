"""The one compiled module: the fan-out loop (bridge/_fanout.c). Optional: without a C
compiler the install goes on and bridge/hub.py runs the same loop in Python."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("bridge._fanout", ["bridge/_fanout.c"], optional=True)])
