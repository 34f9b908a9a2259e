"""Outcomes of a Canary operation that callers act on."""


class CanaryError(Exception):
    pass


class CanaryRejected(CanaryError):
    """Canary answered ``Errors`` (or a 4xx): the request itself is wrong; not retried blindly.
    ``method`` is the Canary method that was refused (``getSessionToken`` when the session
    itself was refused, not the data of the operation), empty when unknown."""

    def __init__(self, errors: list[str] | str, method: str = "") -> None:
        errors = [errors] if isinstance(errors, str) else errors  # one message (also: unpickled from args)
        super().__init__("; ".join(errors) or "rejected without a reason")
        self.errors = errors
        self.method = method


class CanaryUnavailable(CanaryError):
    """Retries exhausted, deadline passed or circuit open: try again later."""
