"""Detect: patterns across polls (port scans) found in the connections a poll reports."""

from .networks import AllowList, source_words
from .scans import PortScan, ScanDetector

__all__ = ["AllowList", "PortScan", "ScanDetector", "source_words"]
