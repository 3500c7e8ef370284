"""Diff: what changed between two polls, by set operations on connection keys.

Kept free of imports: the compiled ``_keys`` module lives here and is loaded by
``tcpfast.backend`` before the modules that use it.
"""
