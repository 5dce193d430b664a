"""Errors the request path raises; the service turns them into gRPC statuses."""

from __future__ import annotations


class InvalidArgument(ValueError):
    """A request field is wrong: answered with INVALID_ARGUMENT naming the field."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


class Overloaded(RuntimeError):
    """Too much work is queued: answered with RESOURCE_EXHAUSTED and a retry delay."""

    def __init__(self, description: str, retry_after_s: float = 1.0) -> None:
        super().__init__(description)
        self.retry_after_s = retry_after_s


class EngineUnavailable(RuntimeError):
    """The engine is not running (starting, draining or dead): answered with UNAVAILABLE."""
