"""The one error type the kit turns into a rejection."""

from __future__ import annotations


class Rejected(Exception):
    """Raised when an inbound message cannot be applied; carries the reason."""

    def __init__(self, reason_code: str, reason: str) -> None:
        super().__init__(f"{reason_code}: {reason}")
        self.reason_code = reason_code
        self.reason = reason
