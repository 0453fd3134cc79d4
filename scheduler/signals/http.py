"""HTTP machinery shared by the live carbon-intensity providers.

Each provider owns one `HttpClient`: one `requests.Session` (created on first use, never in a
constructor), a timeout on every call, retries with exponential backoff on connection errors,
timeouts and 5xx answers, `Retry-After` honoured on 429 (the provider is not called again
before that moment), and a cap on calls per minute. Failures come out as `SignalError`
subclasses carrying the provider name and a bounded `reason`:

    auth, no_access, rate_limited, unavailable, timeout, server_error, bad_payload, empty,
    not_found

`TtlCache` keeps validated results for the provider's `ttl_s`; only values that parsed and
validated are stored, so a bad payload can never poison it.

Secrets (API keys, passwords, tokens) are passed in headers or basic auth and never appear in
an error message or a log line: messages name the URL path, never the headers.
"""

from __future__ import annotations

import email.utils
import itertools
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import requests
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from ..clock import Clock
from ..config import HttpProviderConfig
from ..errors import (
    ProviderAuthError,
    ProviderDataError,
    ProviderRateLimited,
    ProviderUnavailable,
    SignalError,
)
from ..models import Forecast

log = logging.getLogger(__name__)

REASONS = frozenset(
    {
        "auth",
        "no_access",
        "rate_limited",
        "unavailable",
        "timeout",
        "server_error",
        "bad_payload",
        "empty",
        "not_found",
    }
)
"""Every `reason` a provider error may carry (a bounded label set for metrics)."""

USER_AGENT = "gridshift (carbon-aware scheduler)"
MAX_BODY_IN_MESSAGE = 200
DEFAULT_RETRY_AFTER_S = 60.0

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def parse_retry_after(value: str | None, now: datetime) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return DEFAULT_RETRY_AFTER_S
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_S
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def body_excerpt(response: requests.Response) -> str:
    """A short, single-line excerpt of an error body (the provider's own words)."""
    text = response.text or ""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            text = str(err.get("message") or err.get("code") or err)
        elif err is not None:
            text = str(err)
            if data.get("message"):
                text += ": " + str(data["message"])
        elif data.get("title"):  # ASP.NET ProblemDetails (Carbon Aware SDK)
            text = str(data["title"])
            if data.get("detail"):
                text += ": " + str(data["detail"])
            if isinstance(data.get("errors"), dict):
                text += " " + "; ".join(f"{k}: {v}" for k, v in data["errors"].items())
    text = " ".join(text.split())
    if len(text) > MAX_BODY_IN_MESSAGE:
        text = text[:MAX_BODY_IN_MESSAGE] + "..."
    return text


def parse_json(provider: str, response: requests.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise ProviderDataError(
            f"{provider}: {what} answered with a body that is not JSON ({exc}); the provider "
            "may be degraded, the next source in the chain is used",
            provider=provider,
            reason="bad_payload",
        ) from None


def validate(provider: str, model: type[M], data: Any, what: str) -> M:
    """Validate a decoded payload; a malformed or partial one raises ProviderDataError."""
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ProviderDataError(
            f"{provider}: {what} returned an unexpected payload ({exc.error_count()} "
            f"problem(s), first at {where}: {first['msg']}); the value is ignored and the "
            "next source in the chain is used",
            provider=provider,
            reason="bad_payload",
        ) from None


@dataclass
class _Entry:
    value: Any
    stored_at: datetime


class TtlCache:
    """Validated results by key, kept `ttl_s` seconds of the injected clock. Thread-safe."""

    def __init__(self, ttl_s: float, clock: Clock) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._items: dict[Hashable, _Entry] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return None
            if (self.clock.now() - entry.stored_at).total_seconds() >= self.ttl_s:
                del self._items[key]
                return None
            return entry.value

    def put(self, key: Hashable, value: Any) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            self._items[key] = _Entry(value, self.clock.now())

    def get_or_fetch(self, key: Hashable, fetch: Callable[[], T]) -> T:
        cached = self.get(key)
        if cached is not None:
            return cached
        value = fetch()  # raises on failure: nothing is stored
        self.put(key, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class HttpClient:
    """One provider's HTTP session with timeouts, retries, Retry-After and a call cap.

    `sleep` (the backoff between retries) is injectable so tests can run without waiting;
    rate-limit bookkeeping (the per-minute window and Retry-After) uses the injected clock.
    """

    def __init__(
        self,
        provider: str,
        base_url: str,
        config: HttpProviderConfig,
        clock: Clock,
        *,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.timeout_s = config.timeout_s
        self.retries = config.retries
        self.max_calls_per_min = config.max_calls_per_min
        self.clock = clock
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep
        self._session: requests.Session | None = None
        self._calls: deque[datetime] = deque()
        self._blocked_until: datetime | None = None
        self._lock = threading.Lock()
        self.calls_made = 0
        self._local = threading.local()  # the last answer, per calling thread

    @property
    def last_status(self) -> int | None:
        """HTTP status of this thread's last answer (None: no answer)."""
        return getattr(self._local, "status", None)

    @property
    def last_error_body(self) -> str:
        """Excerpt of this thread's last non-2xx body."""
        return str(getattr(self._local, "error_body", ""))

    # -- session ---------------------------------------------------------------------------

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            session.headers["Accept"] = "application/json"
            self._session = session
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    # -- rate limiting ---------------------------------------------------------------------

    @property
    def blocked_until(self) -> datetime | None:
        return self._blocked_until

    def _admit(self, path: str) -> None:
        """Refuse the call locally if the provider asked us to wait or the cap is reached."""
        now = self.clock.now()
        with self._lock:
            if self._blocked_until is not None:
                wait_s = (self._blocked_until - now).total_seconds()
                if wait_s > 0:
                    raise ProviderRateLimited(
                        f"{self.provider}: rate limited by the provider; not calling {path} "
                        f"for another {wait_s:.0f} s (Retry-After)",
                        provider=self.provider,
                        retry_after_s=wait_s,
                    )
                self._blocked_until = None
            window_start = now - timedelta(seconds=60)
            while self._calls and self._calls[0] <= window_start:
                self._calls.popleft()
            if len(self._calls) >= self.max_calls_per_min:
                wait_s = max(1.0, (self._calls[0] - window_start).total_seconds())
                raise ProviderRateLimited(
                    f"{self.provider}: the cap of {self.max_calls_per_min} calls per minute "
                    f"is reached; not calling {path} for {wait_s:.0f} s (raise "
                    "max_calls_per_min in the provider's config if the plan allows more)",
                    provider=self.provider,
                    retry_after_s=wait_s,
                )
            self._calls.append(now)

    def _block(self, seconds: float) -> None:
        with self._lock:
            until = self.clock.now() + timedelta(seconds=seconds)
            if self._blocked_until is None or until > self._blocked_until:
                self._blocked_until = until

    # -- requests --------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/")

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | list[tuple[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        json_body: Any = None,
    ) -> requests.Response:
        """Send one logical request (with retries); return a 2xx response or raise.

        4xx answers other than 429 are not retried: they raise at once (401/403 as
        ProviderAuthError, 404 as ProviderDataError with reason not_found, others as
        ProviderDataError with reason bad_payload). The caller may catch ProviderAuthError
        to refresh a token and call again.
        """
        attempt = 0
        while True:
            self._admit(path)
            self.calls_made += 1
            self._local.status = None
            self._local.error_body = ""
            try:
                response = self.session.request(
                    method,
                    self.url(path),
                    params=params,
                    headers=headers,
                    auth=auth,
                    json=json_body,
                    timeout=self.timeout_s,
                )
            except requests.Timeout:
                error: SignalError = ProviderUnavailable(
                    f"{self.provider}: {path} did not answer within {self.timeout_s:g} s "
                    "(timeout_s); the provider is slow or unreachable",
                    provider=self.provider,
                    reason="timeout",
                )
            except requests.ConnectionError as exc:
                error = ProviderUnavailable(
                    f"{self.provider}: cannot connect to {self.base_url} "
                    f"({type(exc).__name__}); check base_url and the network",
                    provider=self.provider,
                    reason="unavailable",
                )
            except requests.RequestException as exc:
                error = ProviderUnavailable(
                    f"{self.provider}: {path} failed ({type(exc).__name__})",
                    provider=self.provider,
                    reason="unavailable",
                )
            else:
                status = response.status_code
                self._local.status = status
                if 200 <= status < 300:
                    return response
                error = self._status_error(path, response)
                if status < 500 or status == 501:
                    raise error
            if attempt >= self.retries:
                raise error
            delay = min(self.max_backoff_s, self.backoff_s * (2**attempt))
            attempt += 1
            log.info(
                "%s: %s (%s); retry %d of %d in %.1f s",
                self.provider,
                path,
                error.reason,
                attempt,
                self.retries,
                delay,
            )
            self.sleep(delay)

    def _status_error(self, path: str, response: requests.Response) -> SignalError:
        status = response.status_code
        excerpt = body_excerpt(response)
        self._local.error_body = excerpt
        said = f": {excerpt}" if excerpt else ""
        if status == 429:
            wait_s = parse_retry_after(response.headers.get("Retry-After"), self.clock.now())
            self._block(wait_s)
            return ProviderRateLimited(
                f"{self.provider}: {path} answered 429 (too many requests){said}; "
                f"not calling again for {wait_s:.0f} s as the provider asked",
                provider=self.provider,
                retry_after_s=wait_s,
            )
        if status in (401, 403):
            return ProviderAuthError(
                f"{self.provider}: {path} answered {status}{said}; check the provider's "
                "credentials in the config (or GRIDSHIFT_PROVIDERS__<NAME>__... variables) "
                "and that the plan covers this endpoint and location",
                provider=self.provider,
                reason="auth",
            )
        if status == 404:
            return ProviderDataError(
                f"{self.provider}: {path} answered 404{said}; check the location id",
                provider=self.provider,
                reason="not_found",
            )
        if status == 501:
            return ProviderUnavailable(
                f"{self.provider}: {path} answered 501 (not implemented){said}; the "
                "provider's data source does not offer this, the next source is used",
                provider=self.provider,
                reason="no_access",
            )
        if status >= 500:
            return ProviderUnavailable(
                f"{self.provider}: {path} answered {status}{said}; the provider has a "
                "problem, the next source in the chain is used",
                provider=self.provider,
                reason="server_error",
            )
        return ProviderDataError(
            f"{self.provider}: {path} rejected the request with {status}{said}",
            provider=self.provider,
            reason="bad_payload",
        )

    def get_json(
        self,
        path: str,
        *,
        params: dict[str, Any] | list[tuple[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> Any:
        response = self.request("GET", path, params=params, headers=headers, auth=auth)
        return parse_json(self.provider, response, path)


def iso_z(when: datetime) -> str:
    """UTC ISO-8601 with a Z and whole seconds: 2024-05-01T12:00:00Z."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_LATLON = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*$")


def parse_latlon(location: str) -> tuple[float, float] | None:
    """'51.5,-0.12' -> (51.5, -0.12); anything else -> None."""
    match = _LATLON.match(location)
    if not match:
        return None
    lat, lon = float(match.group(1)), float(match.group(2))
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return lat, lon


def step_between(starts: list[datetime], default: timedelta) -> timedelta:
    """The resolution of a series: the smallest positive gap between starts."""
    gaps = [b - a for a, b in itertools.pairwise(starts) if b > a]
    return min(gaps) if gaps else default


class HttpProvider:
    """Base of the live providers: name, config, clock, one HttpClient and a TTL cache.

    Nothing here touches the network; the session is created on the first call.
    """

    default_base_url: str = ""

    def __init__(self, name: str, config: HttpProviderConfig, clock: Clock) -> None:
        self.name = name
        self.config = config
        self.clock = clock
        self.http = HttpClient(name, config.base_url or self.default_base_url, config, clock)
        self.cache = TtlCache(config.ttl_s, clock)
        self._denied: dict[Hashable, tuple[datetime, SignalError]] = {}

    def close(self) -> None:
        self.http.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.http.base_url!r})"

    # An endpoint the key cannot use (free tier without forecasts, a region outside the
    # plan) is remembered for a while, so every refresh does not spend a call to learn it
    # again; the caller falls back to the next source meanwhile.
    no_access_retry_s: float = 6 * 3600.0

    def _check_denied(self, key: Hashable) -> None:
        entry = self._denied.get(key)
        if entry is None:
            return
        until, error = entry
        if self.clock.now() < until:
            raise error
        del self._denied[key]

    def _remember_denied(self, key: Hashable, error: SignalError) -> None:
        until = self.clock.now() + timedelta(seconds=self.no_access_retry_s)
        self._denied[key] = (until, error)

    def _cached_forecast(
        self,
        key: Hashable,
        fetch: Callable[[], Forecast],
        location: str,
        start: datetime,
        end: datetime,
        fmt: Callable[[datetime], str] = iso_z,
    ) -> Forecast:
        """The whole forecast the source has, fetched once per `ttl_s` under `key`, cut to
        the points that overlap [start, end); empty there is an error (the next source is
        used)."""
        full = self.cache.get_or_fetch(key, fetch)
        points = [p for p in full.points if p.end > start and p.start < end]
        if not points:
            raise self._empty(f"forecast between {fmt(start)} and {fmt(end)}", location)
        return full.model_copy(update={"points": points})

    def _empty(self, what: str, location: str) -> ProviderDataError:
        return ProviderDataError(
            f"{self.name}: {what} for {location!r} came back empty; the next source in the "
            "chain is used",
            provider=self.name,
            reason="empty",
        )
