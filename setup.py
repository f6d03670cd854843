"""Build hook for the native kernels; metadata lives in pyproject.toml."""
from setuptools import setup

setup()
