"""cosyn: hardware/model co-design for FPGAs."""

from cosyn import errors, ir
from cosyn.errors import CosynError
from cosyn.hw import hls
from cosyn.ir import lower

__all__ = ["CosynError", "errors", "hls", "ir", "lower"]
__version__ = "0.1.0"
