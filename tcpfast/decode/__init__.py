"""Decode: the kernel's table text to rows of CONNECTION_DTYPE (compiled, or pure Python).

Kept free of imports: the compiled ``_parse`` module lives here and is loaded by
``tcpfast.backend`` before the modules that use it.
"""
