"""cosyn: hardware/model co-design for FPGAs."""

from cosyn import errors, ir, perfmodel, sim
from cosyn.errors import CosynError
from cosyn.hw import fpga, hls, rtl
from cosyn.ir import lower

__all__ = ["CosynError", "errors", "fpga", "hls", "ir", "lower", "perfmodel", "rtl", "sim"]
__version__ = "0.1.0"
