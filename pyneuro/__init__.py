"""pyneuro — a small neural-network library with its own compiled numeric core."""
from ._core import get_num_threads, openmp_enabled, set_num_threads

__version__ = "0.1.0"
