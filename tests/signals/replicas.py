"""Local replicas of the carbon-intensity APIs, for tests.

Each replica is a stdlib HTTP server on 127.0.0.1 (a free port, a daemon thread) that answers
like the real API: the same paths, query parameters, headers, status codes and JSON shapes,
including the error bodies the providers send. The values follow a smooth daily curve
(`value_at`) of the replica's clock, so tests can compute what a client should report.

Failure switches (`fail(mode, times=None)`; `heal()` clears them):

    reset      the connection is closed without an answer (a connection error)
    401 / 403  the provider's own bad-key / no-access answer
    429        too many requests, with a Retry-After header (`retry_after`)
    500 / 502  a server error (the provider's error body, or a proxy's HTML page)
    slow       the answer is delayed by `delay_s` seconds (beyond a client's timeout)
    malformed  200 with a body cut off in the middle of the JSON
    partial    200 with valid JSON lacking a required field
    empty      200 with an empty series (forecast, history, current list)

`times=n` applies the fault to the next n requests only. `stop()` takes the server down
(connection refused) and `start()` brings it back on the same port. `override(path, body)`
serves a fixed body (e.g. a documented example) for one path. Every request is recorded in
`requests` (method, path, query, headers).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

from gridshift.scheduler.clock import Clock

from ..conftest import free_port

Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


def _json(status: int, data: Any, headers: dict[str, str] | None = None) -> Answer:
    body = json.dumps(data).encode()
    return status, {"Content-Type": "application/json", **(headers or {})}, body


def _html(status: int, title: str) -> Answer:
    page = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    return status, {"Content-Type": "text/html"}, page.encode()


def floor_to(when: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((when - epoch) // step) * step


def parse_time(text: str) -> datetime:
    """Datetimes as the APIs accept them: ...Z, +00:00, with or without seconds."""
    text = text.strip().replace(" ", "+")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


@dataclass
class _Fault:
    mode: str | None = None
    times: int | None = None


class Replica:
    """Base: the HTTP server, fault switches, overrides and the request log."""

    base_g_per_kwh = 250.0
    amplitude_g_per_kwh = 100.0
    unfaulted_paths: frozenset[str] = frozenset()

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.port = free_port()
        self.requests: list[Seen] = []
        self.retry_after = "30"
        self.delay_s = 2.0
        self.overrides: dict[str, Answer] = {}
        self._fault = _Fault()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        replica = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with replica._lock:
                    replica._connections.add(self.connection)

            def finish(self) -> None:
                with replica._lock:
                    replica._connections.discard(self.connection)
                super().finish()

            def do_GET(self) -> None:
                replica._serve(self, "GET")

            def do_POST(self) -> None:
                replica._serve(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        # Kept-alive connections die with the server, as they do when a real API goes down.
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- switches --------------------------------------------------------------------------

    def fail(self, mode: str, times: int | None = None) -> None:
        with self._lock:
            self._fault = _Fault(mode, times)

    def heal(self) -> None:
        with self._lock:
            self._fault = _Fault()

    def override(self, path: str, body: str | bytes, status: int = 200) -> None:
        raw = body.encode() if isinstance(body, str) else body
        self.overrides[path] = (status, {"Content-Type": "application/json"}, raw)

    def calls(self, path_prefix: str = "") -> list[Seen]:
        return [r for r in self.requests if r.path.startswith(path_prefix)]

    def _take_fault(self) -> str | None:
        with self._lock:
            fault = self._fault
            if fault.mode is None:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._fault = _Fault()
            return fault.mode

    # -- data ------------------------------------------------------------------------------

    def value_at(self, when: datetime) -> float:
        """The replica's intensity curve (in the API's own unit), lowest around 14:00 UTC."""
        hours = when.hour + when.minute / 60
        return round(
            self.base_g_per_kwh + self.amplitude_g_per_kwh * math.cos(2 * math.pi * hours / 24),
            3,
        )

    # -- serving ---------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        split = urlsplit(handler.path)
        path = unquote(split.path)
        query = parse_qs(split.query, keep_blank_values=True)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        length = int(headers.get("content-length", "0") or 0)
        body = handler.rfile.read(length) if length else b""
        self.requests.append(Seen(method, path, query, headers))
        fault = None if path in self.unfaulted_paths else self._take_fault()
        if fault == "reset":
            handler.close_connection = True
            handler.connection.close()
            return
        if fault == "slow":
            time.sleep(self.delay_s)
        answer: Answer
        if path in self.overrides:
            answer = self.overrides[path]
        elif fault in ("401", "403", "429", "500", "502"):
            answer = self.error_answer(int(fault), path)
        else:
            answer = self.answer(method, path, query, headers, body, fault)
        status, extra, payload = answer
        if fault == "malformed" and status == 200:
            payload = payload[: max(1, len(payload) // 2)]
        try:
            handler.send_response(status)
            for key, value in extra.items():
                handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(payload)))
            handler.send_header("Access-Control-Allow-Origin", "*")
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

    def error_answer(self, status: int, path: str) -> Answer:
        """The provider's own answer for an injected error status."""
        if status == 429:
            return _json(429, {"error": "Too many requests"}, {"Retry-After": self.retry_after})
        if status == 502:
            return _html(502, "502 Bad Gateway")
        if status == 403:
            return _html(403, "403 Forbidden")
        if status == 401:
            return _json(401, {"error": "Unauthorized"})
        return _json(500, {"error": "Internal server error"})

    def answer(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
        fault: str | None,
    ) -> Answer:
        raise NotImplementedError


def _q(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


# ------------------------------------------------------------------------------------------
# Electricity Maps v3


def em_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


class ElectricityMapsReplica(Replica):
    """api.electricitymap.org/v3: token in `auth-token`; free keys lack the forecast."""

    def __init__(self, clock: Clock, api_key: str = "em-test-key") -> None:
        super().__init__(clock)
        self.api_key = api_key
        self.forecast_access = True
        self.latlon_zone = "DE"
        self.zones = {"DE", "FR", "GB", "DK-DK2", "US-CAL-CISO"}

    @property
    def base_url(self) -> str:
        return self.url + "/v3"

    def error_answer(self, status: int, path: str) -> Answer:
        if status == 401:
            return _json(401, {"error": "Unauthorized. Please provide a valid auth-token."})
        if status == 403:
            return _json(403, {"error": "Request unauthorized for zoneKey=DE,requestType=latest."})
        return super().error_answer(status, path)

    def _point(self, zone: str, when: datetime, basis: str, full: bool = True) -> dict[str, Any]:
        point: dict[str, Any] = {"zone": zone, "carbonIntensity": self.value_at(when)}
        point["datetime"] = em_time(when)
        if full:
            point["updatedAt"] = em_time(self.clock.now() - timedelta(minutes=7))
            point["createdAt"] = em_time(when - timedelta(days=3))
            point["emissionFactorType"] = basis
            point["isEstimated"] = False
            point["estimationMethod"] = None
        return point

    def answer(self, method, path, query, headers, body, fault):  # type: ignore[no-untyped-def]
        if not path.startswith("/v3/"):
            return _json(404, {"error": "Not found"})
        route = path[len("/v3/") :]
        if route == "zones":
            return _json(200, {z: {"zoneName": z} for z in sorted(self.zones)})
        if headers.get("auth-token") != self.api_key:
            return self.error_answer(401, path)
        zone = _q(query, "zone")
        if zone is None and _q(query, "lat") is not None and _q(query, "lon") is not None:
            zone = self.latlon_zone
        if zone is None:
            return _json(400, {"error": "No zone or lat/lon given"})
        if zone not in self.zones:
            return _json(400, {"error": f"Zone '{zone}' does not exist."})
        basis = _q(query, "emissionFactorType") or "lifecycle"
        now = self.clock.now()
        hour = floor_to(now, timedelta(hours=1))
        if route == "carbon-intensity/latest":
            point = self._point(zone, hour, basis)
            point["isEstimated"] = True
            point["estimationMethod"] = "TIME_SLICER_AVERAGE"
            if fault == "partial":
                del point["carbonIntensity"]
            return _json(200, point)
        if route == "carbon-intensity/forecast":
            if not self.forecast_access:
                return _json(
                    401,
                    {
                        "error": f"Request unauthorized for zoneKey={zone},"
                        "requestType=forecast,dataType=carbon-intensity."
                    },
                )
            points = [
                {"carbonIntensity": self.value_at(t), "datetime": em_time(t)}
                for t in (hour + timedelta(hours=i) for i in range(25))
            ]
            if fault == "empty":
                points = []
            if fault == "partial":
                del points[3]["carbonIntensity"]
            return _json(
                200,
                {
                    "zone": zone,
                    "forecast": points,
                    "updatedAt": em_time(now - timedelta(minutes=20)),
                },
            )
        if route == "carbon-intensity/history":
            history = [
                self._point(zone, hour - timedelta(hours=i), basis) for i in range(24, 0, -1)
            ]
            if fault == "empty":
                history = []
            return _json(200, {"zone": zone, "history": history})
        if route == "carbon-intensity/past-range":
            start, end = _q(query, "start"), _q(query, "end")
            if not start or not end:
                return _json(400, {"error": "Missing start or end"})
            t0 = floor_to(parse_time(start), timedelta(hours=1))
            t1 = parse_time(end)
            if t1 - parse_time(start) > timedelta(days=10):
                return _json(400, {"error": "Time range exceeds 10 days"})
            data = []
            t = t0
            while t < t1:
                data.append(self._point(zone, t, basis))
                t += timedelta(hours=1)
            return _json(200, {"zone": zone, "data": data})
        return _json(404, {"error": "Not found"})


# ------------------------------------------------------------------------------------------
# WattTime v3


def wt_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


@dataclass
class _Token:
    value: str
    issued_at: datetime


class WattTimeReplica(Replica):
    """api.watttime.org: /login (basic auth) -> a 30-minute token; /v3/* with Bearer."""

    base_g_per_kwh = 900.0  # lbs/MWh, like real MOER values
    amplitude_g_per_kwh = 200.0
    unfaulted_paths = frozenset({"/login"})  # faults hit the data endpoints

    def __init__(self, clock: Clock, username: str = "wt-user", password: str = "wt-pass") -> None:
        super().__init__(clock)
        self.username = username
        self.password = password
        self.token_lifetime = timedelta(minutes=30)
        self.tokens: list[_Token] = []
        self.allowed_regions = {"CAISO_NORTH"}
        self.locations = {(41.5, -104.0): ("SPP_WESTNE", "SPP Western Nebraska")}
        self.logins = 0

    @property
    def base_url(self) -> str:
        return self.url

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    def error_answer(self, status: int, path: str) -> Answer:
        if status == 401:
            return _json(401, {"error": "Unauthorized: token expired or invalid"})
        return super().error_answer(status, path)

    def _meta(self, region: str, signal_type: str, generated: bool) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "data_point_period_seconds": 300,
            "region": region,
            "warnings": [],
            "signal_type": signal_type,
            "model": {"date": "2023-03-01"},
            "units": "lbs_co2_per_mwh" if signal_type != "health_damage" else "$_per_mwh",
        }
        if generated:
            meta["generated_at_period_seconds"] = 300
            meta["generated_at"] = wt_time(floor_to(self.clock.now(), timedelta(minutes=5)))
        return meta

    def answer(self, method, path, query, headers, body, fault):  # type: ignore[no-untyped-def]
        now = self.clock.now()
        if path == "/login":
            auth = headers.get("authorization", "")
            expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            if auth != f"Basic {expected}":
                return _json(403, {"error": "Invalid username or password"})
            self.logins += 1
            token = _Token(secrets.token_hex(16), now)
            self.tokens.append(token)
            return _json(200, {"token": token.value})
        bearer = headers.get("authorization", "").removeprefix("Bearer ")
        valid = any(
            t.value == bearer and now - t.issued_at < self.token_lifetime for t in self.tokens
        )
        if not valid:
            return self.error_answer(401, path)
        signal_type = _q(query, "signal_type") or "co2_moer"
        if path == "/v3/region-from-loc":
            try:
                lat = float(_q(query, "latitude") or "")
                lon = float(_q(query, "longitude") or "")
            except ValueError:
                return _json(400, {"error": "Invalid query parameters"})
            found = self.locations.get((lat, lon))
            if found is None:
                return _json(
                    400,
                    {
                        "error": "No coverage available for these coordinates and signal_type",
                        "latitude": _q(query, "latitude"),
                        "longitude": _q(query, "longitude"),
                        "signal_type": signal_type,
                    },
                )
            return _json(
                200,
                {"region": found[0], "region_full_name": found[1], "signal_type": signal_type},
            )
        region = _q(query, "region") or ""
        step = timedelta(minutes=5)
        if path == "/v3/signal-index":
            point = {"point_time": wt_time(floor_to(now, step)), "value": 42.0}
            meta = self._meta(region, signal_type, False)
            meta["units"] = "percentile"
            return _json(200, {"data": [point], "meta": meta})
        if path not in ("/v3/forecast", "/v3/historical"):
            return _json(404, {"error": "Not found"})
        if region not in self.allowed_regions:
            return _json(
                403,
                {
                    "error": "Invalid query parameters",
                    "message": "Invalid scope. You do not have sufficient access to this "
                    "resource. See https://api.watttime.org/plans/ for more information or "
                    "email contact@watttime.org for pricing. Please note that all users are "
                    "allowed free access to CAISO_ZP26.",
                },
            )
        if path == "/v3/forecast":
            horizon_h = int(_q(query, "horizon_hours") or "24")
            if not 0 <= horizon_h <= 72:
                return _json(400, {"error": "Invalid query parameters"})
            t0 = floor_to(now, step)
            count = max(1, horizon_h * 12)
            times = [t0 + i * step for i in range(count)]
            generated = True
        else:
            start, end = _q(query, "start"), _q(query, "end")
            if not start or not end:
                return _json(400, {"error": "Invalid query parameters"})
            t = floor_to(parse_time(start), step)
            t1 = parse_time(end)
            times = []
            while t < t1:
                times.append(t)
                t += step
            generated = False
        data: list[dict[str, Any]] = [
            {"point_time": wt_time(t), "value": self.value_at(t)} for t in times
        ]
        if fault == "empty":
            data = []
        if fault == "partial":
            del data[0]["value"]
        return _json(200, {"data": data, "meta": self._meta(region, signal_type, generated)})


# ------------------------------------------------------------------------------------------
# UK Carbon Intensity


REGIONS = {
    1: ("Scottish Hydro Electric Power Distribution", "North Scotland"),
    11: ("WPD South West", "South West England"),
    12: ("SSE South", "South England"),
    13: ("UKPN London", "London"),
    17: ("Wales", "Wales"),
}
POSTCODES = {"RG41": 12, "BS16": 11, "BS7": 11, "SW1": 13}
FUELS = ("biomass", "coal", "imports", "gas", "nuclear", "other", "hydro", "solar", "wind")


def uk_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def uk_index(value: float) -> str:
    for limit, name in ((50, "very low"), (130, "low"), (210, "moderate"), (310, "high")):
        if value < limit:
            return name
    return "very high"


class UkCarbonIntensityReplica(Replica):
    """api.carbonintensity.org.uk: no key; national and regional; 30-minute periods."""

    base_g_per_kwh = 160.0
    amplitude_g_per_kwh = 90.0

    @property
    def base_url(self) -> str:
        return self.url

    def error_answer(self, status: int, path: str) -> Answer:
        if status == 500:
            return _json(
                500,
                {"error": {"code": "500 Internal Server Error", "message": "Something went wrong"}},
            )
        return super().error_answer(status, path)

    def _bad(self, message: str) -> Answer:
        return _json(400, {"error": {"code": "400 Bad Request", "message": message}})

    def _period(self, start: datetime, regional: bool, offset: float = 0.0) -> dict[str, Any]:
        forecast = round(self.value_at(start) + offset)
        intensity: dict[str, Any] = {"forecast": forecast}
        if not regional:
            done = start + timedelta(minutes=30) <= self.clock.now()
            intensity["actual"] = forecast - 3 if done else None
        intensity["index"] = uk_index(forecast)
        period: dict[str, Any] = {
            "from": uk_time(start),
            "to": uk_time(start + timedelta(minutes=30)),
            "intensity": intensity,
        }
        if regional:
            period["generationmix"] = [
                {"fuel": f, "perc": round(100 / len(FUELS), 1)} for f in FUELS
            ]
        return period

    def _span(self, frm: datetime, count: int) -> list[datetime]:
        half = timedelta(minutes=30)
        first = floor_to(frm, half)
        if first == frm:
            first -= half  # observed: the first period is the half hour ending at `from`
        return [first + i * half for i in range(count)]

    def _range(self, frm: datetime, to: datetime) -> list[datetime]:
        half = timedelta(minutes=30)
        times = []
        t = floor_to(frm, half)
        while t < to:
            times.append(t)
            t += half
        return times

    def _region_block(
        self, regionid: int, times: list[datetime], postcode: str | None, fault: str | None
    ) -> Answer:
        dno, short = REGIONS[regionid]
        periods = [self._period(t, True, offset=regionid) for t in times]
        if fault == "empty":
            periods = []
        if fault == "partial" and periods:
            del periods[0]["intensity"]["forecast"]
        block: dict[str, Any] = {"regionid": regionid, "dnoregion": dno, "shortname": short}
        if postcode:
            block["postcode"] = postcode
        block["data"] = periods
        return _json(200, {"data": block})

    def answer(self, method, path, query, headers, body, fault):  # type: ignore[no-untyped-def]
        parts = [p for p in path.split("/") if p]
        now = self.clock.now()
        half = timedelta(minutes=30)
        try:
            if parts == ["intensity"]:
                periods = [self._period(floor_to(now, half), False)]
                if fault == "partial":
                    del periods[0]["intensity"]["forecast"]
                return _json(200, {"data": periods})
            if len(parts) == 3 and parts[0] == "intensity":
                frm = parse_time(parts[1])
                if parts[2] in ("fw24h", "fw48h"):
                    times = self._span(frm, 49 if parts[2] == "fw24h" else 97)
                elif parts[2] == "pt24h":
                    times = self._range(frm - timedelta(hours=24), frm)
                else:
                    to = parse_time(parts[2])
                    if to - frm > timedelta(days=14):
                        return self._bad("The maximum date range is limited to 14 days.")
                    times = self._range(frm, to)
                periods = [self._period(t, False) for t in times]
                if fault == "empty":
                    periods = []
                if fault == "partial" and periods:
                    del periods[-1]["intensity"]["forecast"]
                return _json(200, {"data": periods})
            if len(parts) == 3 and parts[:2] == ["regional", "regionid"]:
                rid = int(parts[2])
                if rid not in REGIONS:
                    return self._bad("Please enter a valid region id between 1 and 17.")
                return self._region_block(rid, [floor_to(now, half)], None, fault)
            if len(parts) == 3 and parts[:2] == ["regional", "postcode"]:
                return self._postcode(parts[2], [floor_to(now, half)], fault)
            if len(parts) == 6 and parts[:2] == ["regional", "intensity"]:
                frm = parse_time(parts[2])
                if parts[3] in ("fw24h", "fw48h"):
                    times = self._span(frm, 49 if parts[3] == "fw24h" else 97)
                else:
                    times = self._range(frm, parse_time(parts[3]))
                if parts[4] == "regionid":
                    rid = int(parts[5])
                    if rid not in REGIONS:
                        return self._bad("Please enter a valid region id between 1 and 17.")
                    return self._region_block(rid, times, None, fault)
                if parts[4] == "postcode":
                    return self._postcode(parts[5], times, fault)
        except ValueError as exc:
            return self._bad(f"Invalid request: {exc}")
        return self._bad(f"Unknown path {path}")

    def _postcode(self, postcode: str, times: list[datetime], fault: str | None) -> Answer:
        if len(postcode) < 2:
            return self._bad("Please enter a valid postcode, e.g. RG10")
        rid = POSTCODES.get(postcode.upper())
        if rid is None:
            return 200, {"Content-Type": "application/json"}, b""
        return self._region_block(rid, times, postcode.upper(), fault)


# ------------------------------------------------------------------------------------------
# Carbon Aware SDK WebAPI


def sdk_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


class CarbonAwareSdkReplica(Replica):
    """A Carbon Aware SDK WebAPI backed by WattTime: values in g/kWh, 5-minute points."""

    base_g_per_kwh = 420.0
    amplitude_g_per_kwh = 120.0

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.forecast_supported = True
        self.locations = {"eastus": "PJM_ROANOKE", "westus": "CAISO_NORTH"}

    @property
    def base_url(self) -> str:
        return self.url

    def error_answer(self, status: int, path: str) -> Answer:
        if status == 500:
            return _json(
                500,
                {
                    "type": "https://tools.ietf.org/html/rfc7231#section-6.6.1",
                    "title": "Internal Server Error",
                    "status": 500,
                    "detail": "The data source failed to answer",
                },
            )
        return super().error_answer(status, path)

    def _problem(self, field_name: str, message: str) -> Answer:
        return _json(
            400,
            {
                "type": "https://tools.ietf.org/html/rfc7231#section-6.5.1",
                "title": "One or more validation errors occurred.",
                "status": 400,
                "errors": {field_name: [message]},
            },
        )

    def answer(self, method, path, query, headers, body, fault):  # type: ignore[no-untyped-def]
        step = timedelta(minutes=5)
        now = self.clock.now()
        if path == "/locations":
            return _json(
                200,
                {k: {"Latitude": 0.0, "Longitude": 0.0, "Name": k} for k in self.locations},
            )
        location = _q(query, "location")
        if not location:
            return self._problem("location", "The location field is required.")
        if location not in self.locations:
            return self._problem("location", f"Unknown location: '{location}'")
        source = self.locations[location]
        if path == "/emissions/bylocation":
            t0 = parse_time(_q(query, "time") or sdk_time(now - timedelta(hours=1)))
            t1 = parse_time(_q(query, "toTime") or sdk_time(now))
            times = []
            t = floor_to(t0, step)
            while t < t1:
                times.append(t)
                t += step
            items: list[dict[str, Any]] = [
                {
                    "location": source,
                    "time": sdk_time(t),
                    "rating": self.value_at(t),
                    "duration": "00:05:00",
                }
                for t in times
            ]
            if fault == "empty":
                return 204, {}, b""
            if fault == "partial" and items:
                del items[-1]["rating"]
            return _json(200, items)
        if path == "/emissions/forecasts/current":
            if not self.forecast_supported:
                return _json(
                    501,
                    {
                        "type": "https://tools.ietf.org/html/rfc7231#section-6.6.2",
                        "title": "Not Implemented",
                        "status": 501,
                        "detail": "The data source does not support forecasting",
                    },
                )
            first = floor_to(now, step) + step
            start = parse_time(_q(query, "dataStartAt") or sdk_time(first))
            end = parse_time(_q(query, "dataEndAt") or sdk_time(first + timedelta(hours=24)))
            horizon = min(end, first + timedelta(hours=24))
            points: list[dict[str, Any]] = []
            t = max(first, floor_to(start, step))
            while t < horizon:
                points.append(
                    {
                        "location": source,
                        "timestamp": sdk_time(t),
                        "duration": 5,
                        "value": self.value_at(t),
                    }
                )
                t += step
            if fault == "empty":
                points = []
            if fault == "partial" and points:
                del points[0]["value"]
            best = min(points, key=lambda p: p.get("value", math.inf)) if points else None
            return _json(
                200,
                [
                    {
                        "generatedAt": sdk_time(floor_to(now, step)),
                        "requestedAt": sdk_time(now),
                        "location": location,
                        "dataStartAt": sdk_time(start),
                        "dataEndAt": sdk_time(end),
                        "windowSize": 5,
                        "optimalDataPoints": [best] if best else [],
                        "forecastData": points,
                    }
                ],
            )
        return _json(404, {"type": "about:blank", "title": "Not Found", "status": 404})


@dataclass
class ReplicaSet:
    """All four replicas on one clock (for hub and agent tests)."""

    clock: Clock
    em: ElectricityMapsReplica = field(init=False)
    wt: WattTimeReplica = field(init=False)
    uk: UkCarbonIntensityReplica = field(init=False)
    sdk: CarbonAwareSdkReplica = field(init=False)

    def __post_init__(self) -> None:
        self.em = ElectricityMapsReplica(self.clock)
        self.wt = WattTimeReplica(self.clock)
        self.uk = UkCarbonIntensityReplica(self.clock)
        self.sdk = CarbonAwareSdkReplica(self.clock)

    def all(self) -> list[Replica]:
        return [self.em, self.wt, self.uk, self.sdk]

    def start(self) -> ReplicaSet:
        for r in self.all():
            r.start()
        return self

    def stop(self) -> None:
        for r in self.all():
            r.stop()
