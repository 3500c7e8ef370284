"""A source that falls back to another, for good, once the first one fails."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Snapshot, Source, StopReading, Warn

if TYPE_CHECKING:
    from .netlink_events import DestroyEvents


class NetlinkFallbackWarning(RuntimeWarning):
    """netlink failed; rows come from /proc instead."""


class FallbackSource:
    """Reads ``primary`` until a read fails (OSError), then ``fallback`` from that read on.

    The switch is said once on ``warn``; ``primary`` None means it could not even
    be opened (``failure`` says why), and ``fallback`` None that there is nothing
    to fall back to: then the failure is raised.
    """

    def __init__(self, primary: Source | None, fallback: Source | None, warn: Warn,
                 failure: str | None = None) -> None:
        self._primary = primary
        self._fallback = fallback
        self._warn = warn
        #: Why the primary source is no longer read; None while it is.
        self.failure: str | None = None
        if primary is None:
            self._fail(failure or "the first source could not be opened")

    @property
    def current(self) -> Source | None:
        return self._primary if self._primary is not None else self._fallback

    @property
    def kind(self) -> str:
        current = self.current
        return current.kind if current is not None else "none"

    @property
    def where(self) -> str:
        current = self.current
        return current.where if current is not None else "nothing"

    def read(self, *, size_hint: int = 0, stop_reading: StopReading | None = None) -> Snapshot:
        if self._primary is not None:
            try:
                return self._primary.read(size_hint=size_hint, stop_reading=stop_reading)
            except OSError as error:
                failed = self._primary
                self._primary = None
                failed.close()
                self._fail(f"{failed.where} failed ({error.strerror or error})")
        if self._fallback is None:
            raise OSError(f"{self.failure}, and there is nothing to fall back to")
        return self._fallback.read(size_hint=size_hint, stop_reading=stop_reading)

    def destroy_events(self, warn: Warn) -> DestroyEvents | None:
        current = self.current
        return current.destroy_events(warn) if current is not None else None

    def opened(self) -> int | None:
        current = self.current
        return current.opened() if current is not None else None

    def close(self) -> None:
        for source in (self._primary, self._fallback):
            if source is not None:
                source.close()

    def _fail(self, failure: str) -> None:
        self.failure = failure
        instead = f"reading {self._fallback.where} instead" if self._fallback else "nothing to read"
        self._warn(f"{failure}; {instead}")
