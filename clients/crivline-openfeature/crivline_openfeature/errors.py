"""What the provider raises on purpose (under :class:`crivline.errors.CrivlineError`)."""

from __future__ import annotations

from crivline.errors import CrivlineError


class ProviderError(CrivlineError):
    """Base of the provider's own errors."""


class InvalidOptions(ProviderError, ValueError):
    """``CrivlineProvider(...)`` was given an argument it cannot work with."""


class KeyRefused(ProviderError):
    """The edge refused the server key (401: revoked or unknown; 403: not a server key).

    Final: the provider stops following the edge."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class EdgeUnavailable(ProviderError):
    """The edge could not be reached or did not answer usefully; the provider retries."""

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class BadFlagSet(ProviderError):
    """The edge sent something that is not a flag set or a patch; it is not applied."""
