"""Every error gridshift raises, in one tree.

    GridshiftError
    ├── ConfigError            bad configuration: names the field and what is allowed
    ├── ValidationError        bad input from a user (API, CLI): nothing was changed
    │   └── InvalidTransition  a job state change that the state machine forbids
    ├── NotFound               no such job (or device, or region)
    ├── Conflict               the request clashes with current state (e.g. duplicate id)
    ├── StoreError             the database failed or holds a schema newer than this code
    ├── SignalError            a carbon-intensity provider failed
    │   ├── ProviderAuthError      401/403: the key is wrong or lacks access
    │   ├── ProviderRateLimited    429: carries retry_after_s
    │   ├── ProviderUnavailable    connection error, timeout or 5xx
    │   ├── ProviderDataError      the payload was malformed, partial or empty
    │   └── NoSignal               no provider could answer for a region
    ├── TelemetryError         NVML (or another power source) failed
    └── AdapterError           an engine (local processes, Slurm, Kubernetes, Ray) failed
        └── EngineUnavailable      the engine cannot be reached right now; retry later

Each message says what failed and what to do about it.
"""

from __future__ import annotations


class GridshiftError(Exception):
    """Base of every gridshift error."""


class ConfigError(GridshiftError):
    """The configuration is invalid."""


class ValidationError(GridshiftError):
    """A request was rejected; nothing was changed."""


class InvalidTransition(ValidationError):
    """A job cannot move from its current state to the requested one."""


class NotFound(GridshiftError):
    """The named object does not exist."""


class Conflict(GridshiftError):
    """The request clashes with the current state."""


class StoreError(GridshiftError):
    """The store failed."""


class SignalError(GridshiftError):
    """A carbon-intensity provider failed."""

    def __init__(self, message: str, *, provider: str = "", reason: str = "error") -> None:
        super().__init__(message)
        self.provider = provider
        self.reason = reason


class ProviderAuthError(SignalError):
    """The provider refused the credentials (401/403)."""


class ProviderRateLimited(SignalError):
    """The provider answered 429."""

    def __init__(self, message: str, *, provider: str = "", retry_after_s: float = 60.0) -> None:
        super().__init__(message, provider=provider, reason="rate_limited")
        self.retry_after_s = retry_after_s


class ProviderUnavailable(SignalError):
    """Connection error, timeout or server error."""


class ProviderDataError(SignalError):
    """The provider's payload was malformed, partial or empty."""


class NoSignal(SignalError):
    """No provider could give a value for the region."""


class TelemetryError(GridshiftError):
    """A power-telemetry source failed."""


class AdapterError(GridshiftError):
    """An engine adapter failed."""


class EngineUnavailable(AdapterError):
    """The engine cannot be reached right now; the action will be retried."""
