"""cocotb bench for the UART stream bridge (`cosyn.fpga.UartBridge` around `cosyn_top`).

Drives the `rx` line bit by bit (8N1, LSB first) at a bit time 1.5% longer than the
bridge's, with random idle gaps between bytes, and decodes the `tx` line the same
way. The stimulus (`COSYN_UART_STIMULUS`, JSON): `divisor` (clock cycles per bit),
`first` (bytes of whole samples), `expect_first` (output bytes they give), `partial`
(bytes of a sample cut short by a break) and `then` (bytes of whole samples after the
break). Writes every byte received on `tx` to `COSYN_UART_OUT` (a file).
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, Timer

PERIOD_NS = 10
SKEW = 1.015  # the host's bit time against the bridge's


async def send_byte(dut: Any, byte: int, bit_ps: int) -> None:
    """One 8N1 frame on rx: start bit, 8 data bits LSB first, stop bit."""
    for bit in [0, *((byte >> k) & 1 for k in range(8)), 1]:
        dut.rx.value = bit
        await Timer(bit_ps, unit="ps")


async def send(dut: Any, data: list[int], bit_ps: int, rng: random.Random) -> None:
    for byte in data:
        await send_byte(dut, byte, bit_ps)
        await Timer(rng.randrange(0, bit_ps), unit="ps")  # an idle gap, off the clock grid


async def receive(dut: Any, divisor: int, got: list[int]) -> None:
    """Decode the tx line forever: mid-bit samples on the bridge's own clock."""
    while True:
        await FallingEdge(dut.tx)
        await ClockCycles(dut.clk, divisor // 2)
        assert dut.tx.value == 0, "a start bit shorter than half a bit"
        byte = 0
        for k in range(8):
            await ClockCycles(dut.clk, divisor)
            byte |= int(dut.tx.value) << k
        await ClockCycles(dut.clk, divisor)
        assert dut.tx.value == 1, f"byte {len(got)}: no stop bit"
        got.append(byte)


async def wait_for(dut: Any, got: list[int], n: int, limit: int) -> None:
    for _ in range(limit):
        if len(got) >= n:
            return
        await RisingEdge(dut.clk)
    raise AssertionError(f"received {len(got)} of {n} bytes in {limit} cycles")


@cocotb.test()
async def uart_bridge(dut: Any) -> None:
    with open(os.environ["COSYN_UART_STIMULUS"]) as f:
        stim = json.load(f)
    div = stim["divisor"]
    bit_ps = round(div * PERIOD_NS * 1000 * SKEW)
    rng = random.Random(0)
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    dut.rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    assert dut.leds.value[0] == 1, "LED 0 (running) is off out of reset"
    got: list[int] = []
    cocotb.start_soon(receive(dut, div, got))
    frame = 12 * div  # cycles per byte, with margin
    await send(dut, stim["first"], bit_ps, rng)
    await wait_for(dut, got, stim["expect_first"], frame * (stim["expect_first"] + 8))
    await send(dut, stim["partial"], bit_ps, rng)
    dut.rx.value = 0  # a break: two frames low
    await Timer(20 * bit_ps, unit="ps")
    dut.rx.value = 1
    await Timer(2 * bit_ps, unit="ps")
    await send(dut, stim["then"], bit_ps, rng)
    await ClockCycles(dut.clk, frame * (len(stim["then"]) + 8))
    assert dut.leds.value[1] == 0, "LED 1 (a byte lost) is lit"
    with open(os.environ["COSYN_UART_OUT"], "wb") as f:
        f.write(bytes(got))
