"""Atomic file writes for report files, shared with run directories (``gradconf.runs.io``)."""

from gradconf.runs.io import write_bytes_atomic, write_text_atomic

__all__ = ["write_bytes_atomic", "write_text_atomic"]
