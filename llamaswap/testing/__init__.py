"""Helpers for tests and for plugin authors: the test upstream, fake effects, contract checks."""
