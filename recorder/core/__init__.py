"""Sans-I/O core: bytes and a capture time in, events out.

Nothing in this package reads a clock, a file or a socket, starts a thread or
imports the runtime shells (tests/test_architecture.py checks it).
"""
