"""The Canary client's error paths with `responses` answering inside requests (no server needed;
Redis stays real: every call is admitted through the shared bucket). TC-22, CT-02.

The mock server (devtools/canary_mock.py) covers the contract and the cross-process behaviour;
these tests pin what the client does with answers a server can give that the mock does not model.
"""

from __future__ import annotations

import json

import pytest
import requests
import responses

from canary.client import SESSION_KEY, CanaryClient
from canary.errors import CanaryRejected, CanaryUnavailable

BASE = "http://canary.invalid:55293/api/v1"
TAG = "Secil.Portugal.Cement.Kiln.Temp"
GOOD = {"statusCode": "Good", "errors": []}


@pytest.fixture
def client(settings, canary_redis) -> CanaryClient:
    settings.CANARY_URL = BASE
    settings.CANARY_API_TOKEN = "responses-api-token"
    settings.CANARY_ATTEMPTS = 3
    canary_redis.set(SESSION_KEY, "session-1")  # a session another worker opened
    return CanaryClient(sleep=lambda seconds: None)


def store(client: CanaryClient) -> None:
    client.store_properties({TAG: [["Eng Units", "2026-12-07T00:00:00.0000000Z", "bar", 192]]})


@responses.activate
def test_a_timeout_is_retried_then_the_operation_is_unavailable(client):
    """TC-22: a per-attempt timeout is transient: every attempt is made, then CanaryUnavailable."""
    responses.post(f"{BASE}/storeData", body=requests.Timeout("read timed out"))
    with pytest.raises(CanaryUnavailable, match=r"storeData failed after 3 attempt\(s\): timeout"):
        store(client)
    assert len(responses.calls) == 3


@responses.activate
def test_a_reset_connection_is_retried_and_the_next_answer_wins(client):
    """TC-22: a dropped connection is transient; the retry's Good ends the operation."""
    responses.post(f"{BASE}/storeData", body=requests.ConnectionError("connection reset by peer"))
    responses.post(f"{BASE}/storeData", json=GOOD)
    store(client)
    assert len(responses.calls) == 2


@responses.activate
def test_503_and_429_are_retried(client):
    """TC-22: 5xx and 429 answers are retried (status in the body is never read from them)."""
    responses.post(f"{BASE}/storeData", status=503, body="Service Unavailable")
    responses.post(f"{BASE}/storeData", status=429, body="Too Many Requests")
    responses.post(f"{BASE}/storeData", json=GOOD)
    store(client)
    assert len(responses.calls) == 3


@responses.activate
def test_an_html_page_with_200_is_a_refusal_not_an_outage(client):
    """CT-02: a 200 whose body is not JSON (a proxy's login page) is refused at once, not retried."""
    responses.post(f"{BASE}/storeData", status=200, body="<html>please log in</html>", content_type="text/html")
    with pytest.raises(CanaryRejected, match="HTTP 200: <html>please log in"):
        store(client)
    assert len(responses.calls) == 1


@responses.activate
def test_an_unknown_status_code_is_a_refusal_with_the_status_named(client):
    """CT-02: status comes from the body; one the contract does not know is refused, not retried."""
    responses.post(f"{BASE}/storeData", json={"statusCode": "Maybe", "errors": []})
    with pytest.raises(CanaryRejected, match="statusCode 'Maybe'"):
        store(client)
    assert len(responses.calls) == 1


@responses.activate
def test_errors_carry_canarys_messages(client):
    """CT-02: statusCode Errors is Canary saying no: its messages are kept, nothing is retried."""
    responses.post(f"{BASE}/storeData", json={"statusCode": "Errors", "errors": ["tag path is not valid: x"]})
    with pytest.raises(CanaryRejected, match="tag path is not valid: x"):
        store(client)
    assert len(responses.calls) == 1


@responses.activate
def test_a_bad_session_token_logs_in_again_and_resends_with_the_new_token(client, canary_redis):
    """TC-22: BadSessionToken drops the shared token; one login; the retry carries the new token."""
    responses.post(f"{BASE}/storeData", json={"statusCode": "BadSessionToken", "errors": []})
    responses.post(f"{BASE}/getSessionToken", json={**GOOD, "sessionToken": "session-2"})
    responses.post(f"{BASE}/storeData", json=GOOD)
    store(client)
    sent = [json.loads(c.request.body) for c in responses.calls]
    assert [c.request.url.rsplit("/", 1)[1] for c in responses.calls] == ["storeData", "getSessionToken", "storeData"]
    assert sent[0]["sessionToken"] == "session-1" and sent[2]["sessionToken"] == "session-2"
    assert sent[1]["settings"]["autoWriteNoData"] is False and sent[1]["settings"]["extendData"] is False
    assert canary_redis.get(SESSION_KEY) == b"session-2"


@responses.activate
def test_a_pre_encoded_body_is_sent_byte_for_byte(client):
    """CT-02: a batch body stored as text is spliced into the request, not parsed and re-encoded."""
    responses.post(f"{BASE}/storeData", json=GOOD)
    body = '{"' + TAG + '":[["Eng Units","2026-12-07T00:00:00.0000000Z","°C",192]]}'
    client.store_properties(body)
    sent = responses.calls[0].request.body
    assert sent == ('{"sessionToken":"session-1","properties":' + body + "}").encode()
