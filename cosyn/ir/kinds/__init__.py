"""Node kinds defined in one module each: the node, and how both frontends lower to it.

A kind's module holds its `Node` subclass (registered in `cosyn.ir.nodes.KINDS` by its
`kind`: golden `eval`, `infer_shape`, `infer_range`), the builder function that makes
its node from frontend values, its torch lowering (`cosyn.ir.lowering.lowers`: the
functions and methods it takes; `LOWERINGS` for module types) and its QONNX lowering
(`cosyn.ir.qonnx.onnx_op`: the op type with its float replay). `cosyn.ir` imports every
module here, so a new kind edits no list. Its hardware lives beside the other kinds':
the RTL block in `hw/rtl/_<kind>.py`, its timing and resources in
`perfmodel/<kind>.py`, its hls4ml converter (and extension layer) in
`hw/hls/_convert.py`: four source files, and a C++ header where hls4ml has no layer.

The kinds of the first graph (dense, conv, pools, requantizers, add, poly) predate this
package and live in `cosyn.ir.nodes`, lowered by the frontends' own walks.
"""
