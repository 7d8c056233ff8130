"""Routing: the Router's event queue, schedulers and swappers."""
