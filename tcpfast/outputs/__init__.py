"""Outputs: what a poll's events become (text or JSON lines)."""
