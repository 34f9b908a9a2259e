"""Outcomes of a Canary operation that callers act on."""


class CanaryError(Exception):
    pass


class CanaryRejected(CanaryError):
    """Canary answered ``Errors`` (or a 4xx): the request itself is wrong; not retried blindly."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors) or "rejected without a reason")
        self.errors = errors


class CanaryUnavailable(CanaryError):
    """Retries exhausted, deadline passed or circuit open: try again later."""
