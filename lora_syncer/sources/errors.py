"""Errors a declared source can cause. Each message is one line and never carries credentials."""

from __future__ import annotations


class SourceError(Exception):
    """Base class. `reason` is a short stable code for /status and metrics."""

    reason = "source_error"

    def __init__(self, message: str) -> None:
        # One line whatever the cause: messages end up in logs and /status.
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)


class InvalidSource(SourceError):
    """The declared source (or checksum) cannot be parsed or is not supported."""

    reason = "invalid_source"


class ForbiddenSource(SourceError):
    """Refused by --allowed-sources (including a redirect hop)."""

    reason = "forbidden_source"


class UnsafeContent(SourceError):
    """An archive entry, file name or S3 key that could escape or mislead (`..`, links, ...)."""

    reason = "unsafe_content"


class TooLarge(SourceError):
    """A size or file-count limit was exceeded."""

    reason = "too_large"


class ChecksumMismatch(SourceError):
    """The content does not match the declared checksum."""

    reason = "checksum_mismatch"

    def __init__(self, source: str, expected: str, actual: str) -> None:
        super().__init__(f"{source}: checksum mismatch: declared {expected}, content is {actual}")
        self.expected = expected
        self.actual = actual


class DownloadError(SourceError):
    """The download failed (network, HTTP status, S3 error). `transient` errors are retried."""

    reason = "download_failed"

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
