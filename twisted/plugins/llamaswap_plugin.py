"""Twisted plugin drop-in: the ``llamaswap`` twistd command and the built-in policies."""

from twisted.application.service import ServiceMaker

from llamaswap.router.builtin import fifo, group, matrix, memory, serial

llamaswap = ServiceMaker(
    "llamaswap",
    "llamaswap.tap",
    "One OpenAI-compatible endpoint that starts, stops and swaps local inference servers",
    "llamaswap",
)

__all__ = ["fifo", "group", "llamaswap", "matrix", "memory", "serial"]
