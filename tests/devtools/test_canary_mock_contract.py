"""The Canary mock answers as docs/canary-api.md says, including every error variant (CT-02, TC-20).

A real HTTP server on a free port (one per module), talked to with ``requests``; the mock's clock is
controllable so rate windows and expiry are checked without sleeping.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools.canary_mock import CanaryMock, MockHTTPServer, running

TOKEN = "test-api-token-0123456789"
TS = "2025-08-26T12:00:00.0000000Z"
SAFE = {"clientTimeout": 120000, "autoCreateDatasets": False, "autoWriteNoData": False, "extendData": False}
TAG = "machine.Portugal.Lisbon.Line1.Temp"
BASE_DIR = Path(__file__).resolve().parents[2]


class Clock:
    """Monotonic time unless frozen; frozen time moves only when told to."""

    def __init__(self) -> None:
        self.frozen: float | None = None

    def __call__(self) -> float:
        return time.monotonic() if self.frozen is None else self.frozen

    def freeze(self) -> None:
        self.frozen = time.monotonic()

    def advance(self, seconds: float) -> None:
        assert self.frozen is not None
        self.frozen += seconds

    def thaw(self) -> None:
        self.frozen = None


class Api:
    """A few lines of Canary client, enough to drive the mock over HTTP."""

    def __init__(self, server: MockHTTPServer) -> None:
        self.url = server.url
        self.http = requests.Session()

    def post(self, method: str, body: Any, api: str = "v1", timeout: float = 5.0, **kw: Any) -> requests.Response:
        return self.http.post(f"{self.url}/api/{api}/{method}", json=body, timeout=timeout, **kw)

    def call(self, method: str, body: Any, api: str = "v1") -> dict[str, Any]:
        response = self.post(method, body, api)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == "application/json"
        data = response.json()
        assert isinstance(data["errors"], list) and data["statusCode"] in ("Good", "Errors", "BadSessionToken")
        return data

    def login(self, settings: dict[str, Any] | None = None, **body: Any) -> str:
        data = self.call("getSessionToken", {"apiToken": TOKEN, "historians": ["machine"], "clientId": "test-1",
                                             "settings": SAFE if settings is None else settings, **body})
        assert data["statusCode"] == "Good", data
        return str(data["sessionToken"])

    def store(self, token: str, properties: Any) -> dict[str, Any]:
        return self.call("storeData", {"sessionToken": token, "properties": properties})

    def read(self, *tags: str) -> dict[str, Any]:
        return self.call("getTagProperties", {"apiToken": TOKEN, "tags": list(tags)}, api="v2")

    def control(self, verb: str, name: str, body: Any = None) -> requests.Response:
        return self.http.request(verb, f"{self.url}/_mock/{name}", json=body, timeout=5)

    def stats(self) -> dict[str, Any]:
        return dict(self.control("GET", "stats").json())


def row(name: str, value: Any, ts: str = TS, quality: Any = 192) -> list[Any]:
    return [name, ts, value, quality]


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def mock(clock: Clock) -> CanaryMock:
    return CanaryMock(TOKEN, limit_rps=5, seed=7, clock=clock)


@pytest.fixture(scope="module")
def server(mock: CanaryMock) -> Iterator[MockHTTPServer]:
    with running(mock) as srv:
        yield srv


@pytest.fixture(autouse=True)
def fresh(mock: CanaryMock, clock: Clock) -> None:
    clock.thaw()
    mock.reset()


@pytest.fixture
def api(server: MockHTTPServer) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.http.close()


@pytest.fixture
def frozen(mock: CanaryMock, clock: Clock) -> Iterator[Clock]:
    """Frozen clock; the mock's 1-second windows start exactly now."""
    clock.freeze()
    mock.reset()
    yield clock
    clock.thaw()


# --- sessions ------------------------------------------------------------------------------------

def test_session_store_and_read_back(api: Api, mock: CanaryMock) -> None:
    """CT-02: getSessionToken → storeData → getTagProperties returns exactly what was stored."""
    token = api.login()
    props = {TAG: [row("Eng Units", "°C"), row("High Limit", 120.5), row("Description", "Oven temp"),
                   row("Enabled", True), row("Sample Interval", 1000, quality="Good")],
             "machine.Portugal.Lisbon.Line1.Speed": [row("Low Limit", 0, quality=0)]}
    assert api.store(token, props) == {"statusCode": "Good", "errors": []}
    assert api.read(TAG, "machine.Portugal.Lisbon.Line1.Speed") == {
        "statusCode": "Good", "errors": [],
        "properties": {TAG: {"Eng Units": "°C", "High Limit": 120.5, "Description": "Oven temp", "Enabled": True,
                             "Sample Interval": 1000},
                       "machine.Portugal.Lisbon.Line1.Speed": {"Low Limit": 0}}}
    stats = api.stats()
    assert (stats["rows_stored"], stats["sessions_created"], stats["unsafe_sessions"]) == (6, 1, 0)
    assert stats["sessions"][0]["settings"]["clientTimeout"] == 120000
    assert [tuple(r[:4]) for r in mock.history(TAG)] == [tuple(r) for r in props[TAG]]


def test_wrong_api_token_gets_no_session(api: Api) -> None:
    """CT-02: a wrong or missing apiToken answers Errors and creates no session."""
    for token in ("wrong", None, 42):
        data = api.call("getSessionToken", {"apiToken": token, "historians": ["machine"], "clientId": "c",
                                            "settings": SAFE})
        assert data["statusCode"] == "Errors" and "apiToken" in data["errors"][0] and "sessionToken" not in data
    assert api.stats()["sessions_created"] == 0


@pytest.mark.parametrize(("change", "reason"), [
    ({"historians": []}, "historians"),
    ({"historians": "machine"}, "historians"),
    ({"historians": ["machine", 3]}, "historians"),
    ({"clientId": ""}, "clientId"),
    ({"clientId": None}, "clientId"),
    ({"settings": None}, "settings must be an object"),
    ({"settings": {"extendedData": False}}, "unknown setting 'extendedData'"),
    ({"settings": {"clientTimeout": "120000"}}, "clientTimeout"),
    ({"settings": {"clientTimeout": 0}}, "clientTimeout"),
    ({"settings": {"autoWriteNoData": "false"}}, "settings.autoWriteNoData"),
    ({"setting": SAFE}, "unknown key 'setting'"),
])
def test_get_session_token_body_is_checked(api: Api, change: dict[str, Any], reason: str) -> None:
    """TC-20: a getSessionToken body that does not match docs/canary-api.md is refused with the reason."""
    body = {"apiToken": TOKEN, "historians": ["machine"], "clientId": "c", "settings": SAFE, **change}
    data = api.call("getSessionToken", body)
    assert data["statusCode"] == "Errors"
    assert any(reason in e for e in data["errors"]), data["errors"]


def test_omitted_unsafe_settings_are_flagged(api: Api) -> None:
    """CT-02: autoWriteNoData/extendData default to true; such a session works but is counted unsafe."""
    api.login(settings={})
    api.login(settings={**SAFE, "extendData": True})
    api.login()
    stats = api.stats()
    assert stats["unsafe_sessions"] == 2
    assert [s["unsafe"] for s in stats["sessions"]] == [["autoWriteNoData", "extendData"], ["extendData"], []]
    assert stats["sessions"][0]["settings"]["clientTimeout"] == 60000  # the documented default


def test_missing_unknown_revoked_and_dropped_sessions_get_bad_session_token(api: Api) -> None:
    """CT-02: every way of not having a live session answers BadSessionToken, for every session method."""
    def refused(token: Any, why: str) -> None:
        for method, body in (("storeData", {"sessionToken": token, "properties": {TAG: [row("A", 1)]}}),
                             ("keepAlive", {"sessionToken": token}),
                             ("revokeSessionToken", {"sessionToken": token})):
            if token is None:
                del body["sessionToken"]
            data = api.call(method, body)
            assert data["statusCode"] == "BadSessionToken", (method, data)
            assert why in data["errors"][0], (method, data)

    refused(None, "no session token")
    refused("never-issued", "unknown session token")
    token = api.login()
    assert api.call("revokeSessionToken", {"sessionToken": token})["statusCode"] == "Good"
    refused(token, "revoked")
    token = api.login()
    assert api.control("POST", "faults", {"drop_sessions": True}).status_code == 200
    refused(token, "dropped")
    assert api.read(TAG)["properties"] == {TAG: {}}  # nothing was stored by any refused call
    stats = api.stats()
    assert (stats["sessions_revoked"], stats["sessions_dropped"]) == (1, 1)
    assert stats["status_codes"]["BadSessionToken"] == 12


def test_keep_alive_keeps_a_session_past_its_timeout_while_an_idle_one_expires(api: Api) -> None:
    """CT-02: sessions expire after clientTimeout of inactivity; keepAlive resets the clock."""
    short = {**SAFE, "clientTimeout": 1000}
    kept, idle = api.login(settings=short), api.login(settings=short)
    started = time.monotonic()
    deadline = started + 5.0
    while api.stats()["sessions_active"] == 2:  # stats never touch a session
        assert time.monotonic() < deadline, "the idle session never expired"
        assert api.call("keepAlive", {"sessionToken": kept})["statusCode"] == "Good"
        time.sleep(0.1)
    assert time.monotonic() - started >= 1.0
    data = api.store(idle, {TAG: [row("A", 1)]})
    assert data["statusCode"] == "BadSessionToken" and "expired after 1 s" in data["errors"][0]
    assert api.store(kept, {TAG: [row("A", 1)]})["statusCode"] == "Good"
    assert api.stats()["sessions_expired"] == 1


def test_client_timeout_or_the_mock_default_sets_the_expiry(api: Api, frozen: Clock) -> None:
    """CT-02: settings.clientTimeout (ms) is the inactivity timeout; omitted, the mock's default (60 s)."""
    default = api.login(settings={"autoWriteNoData": False, "extendData": False})
    long = api.login()  # clientTimeout 120 s
    frozen.advance(59.9)
    assert api.call("keepAlive", {"sessionToken": default})["statusCode"] == "Good"
    frozen.advance(60.05)
    assert api.call("keepAlive", {"sessionToken": default})["statusCode"] == "BadSessionToken"
    assert api.call("keepAlive", {"sessionToken": long})["statusCode"] == "Good"  # idle 119.95 s


def test_expire_after_forces_a_timeout_on_every_session(api: Api, frozen: Clock) -> None:
    """CT-02 (test aid): expire_after overrides the client's clientTimeout, existing sessions included."""
    token = api.login()  # clientTimeout 120 s
    frozen.advance(10)
    assert api.call("keepAlive", {"sessionToken": token})["statusCode"] == "Good"
    api.control("POST", "faults", {"expire_after": 5})
    frozen.advance(5.5)
    assert api.call("keepAlive", {"sessionToken": token})["statusCode"] == "BadSessionToken"


# --- storeData rows ------------------------------------------------------------------------------

@pytest.mark.parametrize(("bad_row", "reason"), [
    (row("Eng Units", "°C", ts="2025-08-26T12:00:00.0000000"), "has no zone"),
    (row("Eng Units", "°C", ts="2025-08-26T12:00:00"), "has no zone"),
    (row("Eng Units", "°C", ts="2025-08-26 12:00:00Z"), "is not ISO 8601"),
    (row("Eng Units", "°C", ts="20250826T120000Z"), "is not ISO 8601"),
    (row("Eng Units", "°C", ts="2025-08-26T12:00:00+0100"), "is not ISO 8601"),
    (row("Eng Units", "°C", ts="2025-02-30T12:00:00Z"), "not a valid date"),
    (row("Eng Units", "°C", ts="2025-08-26T24:00:00Z"), "not a valid time"),
    (row("Eng Units", "°C", ts="1600-12-31T23:59:59Z"), "FILETIME"),
    (row("Eng Units", "°C", ts="1601-01-01T00:30:00+01:00"), "FILETIME"),
    (row("Eng Units", "°C", ts=1756209600), "timestamp must be an ISO 8601 string"),
    (row("Eng Units", "°C", quality=7), "quality must be"),
    (row("Eng Units", "°C", quality=192.0), "quality must be"),
    (row("Eng Units", "°C", quality=True), "quality must be"),
    (row("Eng Units", "°C", quality="Uncertain"), "quality must be"),
    (row("Eng Units", {"unit": "°C"}), "value must be a JSON scalar"),
    (row("Eng Units", ["°C"]), "value must be a JSON scalar"),
    (row("", "°C"), "property name must be a non-empty string"),
    (row(5, "°C"), "property name must be a non-empty string"),
    (["Eng Units", TS, "°C"], "expected [name, timestamp, value, quality]"),
    ("Eng Units=°C", "expected [name, timestamp, value, quality]"),
])
def test_malformed_row_is_refused_naming_tag_and_row(api: Api, bad_row: Any, reason: str) -> None:
    """TC-20, CT-02: each malformed row kind answers Errors naming tag and row; nothing is stored."""
    token = api.login()
    data = api.store(token, {TAG: [row("Description", "ok"), bad_row],
                             "machine.Portugal.Other": [row("Description", "also ok")]})
    assert data["statusCode"] == "Errors"
    assert len(data["errors"]) == 1, data["errors"]
    assert f'tag "{TAG}" row 1: ' in data["errors"][0] and reason in data["errors"][0], data["errors"]
    assert api.read(TAG, "machine.Portugal.Other")["properties"] == {TAG: {}, "machine.Portugal.Other": {}}
    assert api.stats()["rows_stored"] == 0


@pytest.mark.parametrize(("tag", "rows", "reason"), [
    ("machine..Temp", [row("A", 1)], "empty segment"),
    (".machine.Temp", [row("A", 1)], "empty segment"),
    ("machine.Temp.", [row("A", 1)], "empty segment"),
    ("", [row("A", 1)], "empty segment"),
    (TAG, [], "no rows"),
    (TAG, {"A": 1}, "rows must be a list"),
])
def test_malformed_tag_is_refused(api: Api, tag: str, rows: Any, reason: str) -> None:
    """TC-20: bad tag paths and row lists are refused with the tag named."""
    data = api.store(api.login(), {tag: rows})
    assert data["statusCode"] == "Errors"
    assert any(f'"{tag}"' in e and reason in e for e in data["errors"]), data["errors"]


def test_every_problem_gets_its_own_reason(api: Api) -> None:
    """CT-02: one readable reason per problem, each naming tag and row; the request stores nothing."""
    data = api.store(api.login(), {TAG: [row("A", 1, ts="2025-08-26T12:00:00", quality=7), row("B", {}),
                                         row("C", 1)]})
    assert data["errors"] == [
        f'tag "{TAG}" row 0: timestamp "2025-08-26T12:00:00" has no zone (Z or ±hh:mm required)',
        f'tag "{TAG}" row 0: quality must be 0, 64, 192, 32768, "Good" or "Bad", got 7',
        f'tag "{TAG}" row 1: value must be a JSON scalar (or null, the removal marker), got {{}}']
    assert api.read(TAG)["properties"][TAG] == {}


def test_contract_forms_are_accepted(api: Api) -> None:
    """TC-20: every timestamp, quality and value form the contract allows is stored."""
    stamps = ["2025-08-26T12:00:00.0000000Z", "2025-08-26T12:00:00Z", "2025-08-26T12:00:00.123+02:00",
              "2025-08-26T12:00:00.5-05:30", "1601-01-01T00:00:00Z", "9999-12-31T23:59:59.9999999Z"]
    qualities = [192, 0, 64, 32768, "Good", "Bad"]
    values = ["text", 42, -1.5, False, None, ""]
    rows = [row(f"P{i}", value, ts, quality) for i, (ts, quality, value) in enumerate(zip(stamps, qualities, values,
                                                                                          strict=True))]
    assert api.store(api.login(), {TAG: rows})["statusCode"] == "Good"
    assert api.read(TAG)["properties"][TAG] == {"P0": "text", "P1": 42, "P2": -1.5, "P3": False, "P5": ""}


@pytest.mark.parametrize(("extra", "reason"), [
    ({"tvqs": {TAG: [[TS, 1.0, 192]]}}, "tvqs refused"),
    ({"annotations": {}}, "annotations"),
    ({"propertys": {}}, "unknown key 'propertys'"),
])
def test_values_annotations_and_unknown_keys_are_refused(api: Api, extra: dict[str, Any], reason: str) -> None:
    """TC-20: metasync never sends values; anything but sessionToken/properties is refused."""
    data = api.call("storeData", {"sessionToken": api.login(), "properties": {TAG: [row("A", 1)]}, **extra})
    assert data["statusCode"] == "Errors" and any(reason in e for e in data["errors"]), data
    assert api.stats()["rows_stored"] == 0


def test_properties_must_be_an_object(api: Api) -> None:
    """TC-20: properties missing or not an object is refused."""
    token = api.login()
    assert "properties is missing" in api.call("storeData", {"sessionToken": token})["errors"][0]
    assert "must be an object" in api.store(token, [[TAG, "A", TS, 1, 192]])["errors"][0]


def test_null_removal_marker_hides_the_property_and_keeps_history(api: Api, mock: CanaryMock) -> None:
    """CT-02: a null value (metasync's removal marker) removes the name from getTagProperties."""
    token = api.login()
    api.store(token, {TAG: [row("Eng Units", "°C"), row("Description", "Oven")]})
    later = "2025-08-26T12:05:00Z"
    assert api.store(token, {TAG: [row("Eng Units", None, ts=later)]})["statusCode"] == "Good"
    assert api.read(TAG)["properties"] == {TAG: {"Description": "Oven"}}
    assert [(r.name, r.value) for r in mock.history(TAG)] == [("Eng Units", "°C"), ("Description", "Oven"),
                                                              ("Eng Units", None)]
    state = api.control("GET", f"state?tag={TAG}&history=1").json()
    assert state["tags"] == {TAG: {"Description": "Oven"}} and len(state["history"][TAG]) == 3


def test_the_latest_timestamp_is_the_current_value(api: Api) -> None:
    """CT-02 (mock decision): a late re-send of an older row does not regress; equal timestamps: last wins."""
    token = api.login()
    api.store(token, {TAG: [row("Eng Units", "K", ts="2025-08-26T13:00:00Z")]})
    api.store(token, {TAG: [row("Eng Units", "°C", ts="2025-08-26T14:00:00+02:00")]})  # 12:00Z: older
    assert api.read(TAG)["properties"][TAG] == {"Eng Units": "K"}
    api.store(token, {TAG: [row("Eng Units", "°F", ts="2025-08-26T15:00:00+02:00")]})  # 13:00Z: same instant
    assert api.read(TAG)["properties"][TAG] == {"Eng Units": "°F"}


def test_get_tag_properties_errors_and_bearer_token(api: Api) -> None:
    """CT-02: Views read-back: bad apiToken refused, unknown tags are {} and named, Bearer auth works."""
    api.store(api.login(), {TAG: [row("A", 1)]})
    bad = api.call("getTagProperties", {"apiToken": "nope", "tags": [TAG]}, api="v2")
    assert bad["statusCode"] == "Errors" and bad["properties"] == {}
    data = api.read(TAG, "machine.Nowhere")
    assert data["statusCode"] == "Errors" and data["errors"] == ['unknown tag "machine.Nowhere"']
    assert data["properties"] == {TAG: {"A": 1}, "machine.Nowhere": {}}
    bearer = api.post("getTagProperties", {"tags": [TAG]}, api="v2", headers={"Authorization": f"Bearer {TOKEN}"})
    assert bearer.json() == {"statusCode": "Good", "errors": [], "properties": {TAG: {"A": 1}}}


# --- transport ------------------------------------------------------------------------------------

def test_transport_errors(api: Api) -> None:
    """CT-02: unknown method 404, unimplemented 501, bad JSON 400, wrong Content-Type 415, GET 405."""
    url = f"{api.url}/api/v1"
    cases = [
        (api.http.post(f"{url}/storeTagData", json={}), 404),  # the draft's endpoint: not Canary's
        (api.http.post(f"{api.url}/api/v2/storeData", json={}), 404),
        (api.http.post(f"{url}/version", json={}), 501),
        (api.http.post(f"{url}/storeData", data=b"{not json", headers={"Content-Type": "application/json"}), 400),
        (api.http.post(f"{url}/storeData", data=b'{"a": NaN}', headers={"Content-Type": "application/json"}), 400),
        (api.http.post(f"{url}/storeData", json=[1, 2]), 400),
        (api.http.post(f"{url}/storeData", data=b"{}", headers={"Content-Type": "text/plain"}), 415),
        (api.http.get(f"{url}/storeData"), 405),
    ]
    for response, status in cases:
        assert response.status_code == status, (response.request.url, response.text)
        assert response.json()["statusCode"] == "Errors" and response.json()["errors"]
    assert api.stats()["requests_by_method"]["(unknown)"] == 2


# --- fault injection --------------------------------------------------------------------------------

def test_tag_errors_fail_the_whole_request_and_name_the_tags(api: Api) -> None:
    """CT-02 (test aid): tag_errors answers Errors for the chosen tags; nothing of that request is stored."""
    other = "machine.Portugal.Other"
    api.control("POST", "faults", {"tag_errors": [TAG]})
    token = api.login()
    data = api.store(token, {TAG: [row("A", 1)], other: [row("A", 2)]})
    assert data == {"statusCode": "Errors", "errors": [f'tag "{TAG}": injected error (mock tag_errors)']}
    assert api.store(token, {other: [row("A", 2)]})["statusCode"] == "Good"
    assert api.read(TAG, other)["properties"] == {TAG: {}, other: {"A": 2}}


def test_injected_server_errors(api: Api) -> None:
    """CT-02 (test aid): fail_next and error_rate answer HTTP 5xx with a non-JSON body; Views unaffected."""
    token = api.login()
    api.control("POST", "faults", {"fail_next": 2})
    statuses = [api.post("keepAlive", {"sessionToken": token}).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    api.control("POST", "faults", {"error_rate": 1.0})
    responses = [api.post("keepAlive", {"sessionToken": token}) for _ in range(10)]
    assert {r.status_code for r in responses} <= {500, 502, 503}
    assert all(r.headers["Content-Type"].startswith("text/plain") for r in responses)
    assert api.read(TAG)["statusCode"] == "Errors"  # a contract answer (unknown tag), not a 5xx
    assert api.stats()["http_5xx"] == 12
    assert api.control("POST", "faults", {}).json()["faults"]["error_rate"] == 0.0
    assert api.post("keepAlive", {"sessionToken": token}).status_code == 200


def test_429_above_the_configured_rate(api: Api, frozen: Clock) -> None:
    """CT-02 (test aid): more than rate_limit_rps requests in a 1-second window answer HTTP 429."""
    api.control("POST", "faults", {"rate_limit_rps": 3})
    frozen.advance(0.1)
    statuses = [api.post("keepAlive", {"sessionToken": "x"}).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    frozen.advance(1.0)  # the next window
    response = api.post("keepAlive", {"sessionToken": "x"})
    assert response.status_code == 200 and response.json()["statusCode"] == "BadSessionToken"
    api.post("keepAlive", {"sessionToken": "x"})
    api.post("keepAlive", {"sessionToken": "x"})
    limited = api.post("keepAlive", {"sessionToken": "x"})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert api.stats()["http_429"] == 3


def test_hang_makes_the_client_time_out(api: Api) -> None:
    """CT-02 (test aid): hang_seconds holds the answer past the client's timeout; latency_ms delays it."""
    token = api.login()
    api.control("POST", "faults", {"hang_seconds": 30})
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.post("keepAlive", {"sessionToken": token}, timeout=0.3)
    assert time.monotonic() - started < 5
    faults = api.control("POST", "faults", {"latency_ms": 150}).json()["faults"]
    assert (faults["hang_seconds"], faults["latency_ms"]) == (30, 150)  # merged
    api.control("POST", "faults", {"reset": True, "latency_ms": 150})
    started = time.monotonic()
    assert api.call("keepAlive", {"sessionToken": token})["statusCode"] == "Good"
    assert 0.15 <= time.monotonic() - started < 5


def test_rate_windows_and_violations_are_counted(api: Api, frozen: Clock) -> None:
    """CT-02: Write API requests counted per integer 1-second window and in a 1.0 s sliding window."""
    def burst(n: int) -> None:
        for _ in range(n):
            api.post("keepAlive", {"sessionToken": "x"})

    frozen.advance(0.6)
    burst(4)  # window 0: 4
    frozen.advance(0.6)
    burst(4)  # window 1: 4; sliding (0.2, 1.2]: 8 → the 6th, 7th and 8th exceed 5
    api.read(TAG)  # the Views API is not counted
    frozen.advance(1.3)
    burst(6)  # window 2: 6 → one violation; sliding (1.5, 2.5]: 6 → one more
    rate = api.control("GET", "stats?windows=1").json()["rate"]
    assert rate == {"limit_rps": 5, "counted_requests": 14, "elapsed_seconds": 2.5, "max_in_second_window": 6,
                    "max_in_sliding_window": 8, "violations": 1, "sliding_violations": 4,
                    "windows": [[0, 4], [1, 4], [2, 6]]}


# --- control API and transcript ----------------------------------------------------------------------

def test_transcript_records_exchanges_with_secrets_masked(api: Api) -> None:
    """CT-02: the transcript records requests and answers; apiToken and sessionToken never appear."""
    token = api.login()
    api.store(token, {TAG: [row("A", 1)]})
    api.read(TAG)
    transcript = api.control("GET", "transcript?since=0").json()
    assert [e["method"] for e in transcript["entries"]] == ["getSessionToken", "storeData", "getTagProperties"]
    assert transcript["last"] == 3
    text = str(transcript)
    assert TOKEN not in text and token not in text
    first, second, _ = transcript["entries"]
    assert first["request"]["apiToken"] == "***" and first["response"]["sessionToken"] == "***session 1"
    assert second["request"]["sessionToken"] == "***session 1" and second["response"]["statusCode"] == "Good"
    later = api.control("GET", "transcript?since=2").json()["entries"]
    assert [e["seq"] for e in later] == [3]


def test_transcript_file_gets_json_lines(tmp_path: Path) -> None:
    """CT-02: transcript_path appends one JSON line per exchange, secrets masked."""
    path = tmp_path / "transcript.jsonl"
    with running(CanaryMock(TOKEN, transcript_path=path, transcript_size=0)) as srv:
        client = Api(srv)
        client.login()
        assert client.control("GET", "transcript").json()["entries"] == []
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and '"apiToken": "***"' in lines[0] and TOKEN not in lines[0]


def test_control_api_validates_and_resets(api: Api) -> None:
    """CT-02: bad knobs are refused whole; /_mock/reset forgets everything."""
    bad = api.control("POST", "faults", {"error_rate": 2, "colour": "red"})
    assert bad.status_code == 400 and "colour" in bad.json()["error"] and "error_rate" in bad.json()["error"]
    assert api.control("GET", "faults").json()["faults"]["error_rate"] == 0.0
    assert api.control("GET", "nothing").status_code == 404
    assert api.control("GET", "reset").status_code == 405
    api.store(api.login(), {TAG: [row("A", 1)]})
    assert api.control("GET", "state").json() == {"tags": {TAG: {"A": 1}}}
    assert api.control("POST", "reset").json() == {"reset": True}
    assert api.control("GET", "state").json() == {"tags": {}}
    assert api.stats()["requests_total"] == 0


# --- the management command -----------------------------------------------------------------------

def test_canary_mock_command_serves_until_sigterm() -> None:
    """CT-02: `manage.py canary_mock` logs its URLs (never the token), serves, and stops on SIGTERM."""
    secret = "cmd-token-not-in-logs"
    proc = subprocess.Popen([sys.executable, "manage.py", "canary_mock", "--port", "0", "--api-token", secret,
                             "--limit-rps", "50"], cwd=BASE_DIR, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        match = re.search(r"write API (http://\S+)/api/v1/", first)
        assert match, first
        response = requests.post(f"{match[1]}/api/v1/getSessionToken", timeout=5, json={
            "apiToken": secret, "historians": ["machine"], "clientId": "c", "settings": SAFE})
        assert response.json()["statusCode"] == "Good"
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert secret not in first + rest and "canary mock stopped" in rest


def test_the_mock_daemon_keeps_stored_rows_out_of_the_collectors_sight() -> None:
    """The canary_mock daemon freezes what it stored every FREEZE_EVERY_ROWS rows (full collections
    over millions of rows doubled its cost per request) and unfreezes after a reset."""
    import gc
    from types import SimpleNamespace

    from devtools.management.commands.canary_mock import FREEZE_EVERY_ROWS, _keep_gc_cheap

    gc.unfreeze()
    try:
        assert _keep_gc_cheap(SimpleNamespace(rows_stored=FREEZE_EVERY_ROWS - 1), 0) == 0
        assert gc.get_freeze_count() == 0
        assert _keep_gc_cheap(SimpleNamespace(rows_stored=FREEZE_EVERY_ROWS), 0) == FREEZE_EVERY_ROWS
        assert gc.get_freeze_count() > 0
        assert _keep_gc_cheap(SimpleNamespace(rows_stored=10), FREEZE_EVERY_ROWS) == 0  # a reset
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()
