"""Fuzz the whole HTTP API from its own OpenAPI document (schemathesis, in process over ASGI).

An admin token (every route reachable), a private Redis the tests started (deletes are
harmless), a few real records so generated ids sometimes hit something. Passes only with no
5xx anywhere and every documented answer matching its schema. Bounded to about two minutes
by the number of examples per operation.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from locator.app import create_app
from locator.core.auth import Role, create_token
from locator.core.redis import async_client
from locator.core.settings import load_settings
from tests.factories import elder_body, volunteer_body
from tests.servers import clean_homeward_keys

EXAMPLES_PER_OPERATION = 60


async def _admin_token(redis_url: str) -> str:
    client = async_client(redis_url, process="fuzz")
    try:
        token, _ = await create_token(client, role=Role.ADMIN, subject=None, created_at=time.time())
        return token
    finally:
        await client.aclose()


@pytest.fixture
def admin_headers(redis_url: str) -> dict[str, str]:
    clean_homeward_keys(redis_url)
    return {"Authorization": f"Bearer {asyncio.run(_admin_token(redis_url))}"}


@pytest.fixture
def api_schema(admin_headers: dict[str, str], redis_url: str, mqtt_url: str, tmp_path: Path) -> Any:
    settings = load_settings(
        data_dir=tmp_path,
        # Configured, so the webhooks check signatures (403) instead of saying 503 "not set up".
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="fuzz-secret",
        twilio_from="+15005550006",
        public_url="https://homeward.test",
    )
    app = create_app(settings, redis_url=redis_url, mqtt_url=mqtt_url, clock=None)
    with schemathesis.python.asgi.get_client(app) as http:
        # Something to find: ids 1 (and 2) exist, so generated small ids reach real code.
        for n in (1, 2):
            elder = http.post("/api/v1/elders", json=elder_body(), headers=admin_headers)
            assert elder.status_code == 201, elder.text
            http.post(
                "/api/v1/devices",
                json={"device_id": f"fz-{n}", "elder_id": elder.json()["id"]},
                headers=admin_headers,
            )
            vol = http.post("/api/v1/volunteers", json=volunteer_body(n), headers=admin_headers)
            assert vol.status_code == 201, vol.text
        http.post(
            "/api/v1/teams",
            json={"name": "队", "members": [{"volunteer_id": 1, "role": "lead"}]},
            headers=admin_headers,
        )
        report = http.post("/api/v1/incidents", json={"elder_id": 1}, headers=admin_headers)
        assert report.status_code == 201, report.text
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return (
        # An endless event stream, and ways of logging the fuzzer's own admin out.
        schema.exclude(path="/api/v1/stream")
        .exclude(path_regex=r"^/api/v1/tokens/")
        .exclude(method="DELETE", path="/api/v1/session")
    )


def _fuzz(operation: Any, headers: dict[str, str]) -> None:
    strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
    with suppress(Exception):  # not every operation has an input that can be made wrong
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=st.one_of(strategies))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure says enough
    )
    def run(case: Any) -> None:
        case.call_and_validate(
            headers=headers, checks=[not_a_server_error, response_schema_conformance], timeout=10
        )

    run()


# pytest-subtests style parametrisation (schemathesis.pytest.from_fixture) does not run on
# pytest 9, so each operation gets its own Hypothesis run here and failures are collected.
@pytest.mark.timeout(600)
def test_no_server_errors_and_answers_match_the_schema(
    api_schema: Any, admin_headers: dict[str, str]
) -> None:
    failures = []
    count = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        count += 1
        try:
            _fuzz(operation, admin_headers)
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert count > 50  # the whole API, not an empty document
    assert not failures, "\n\n".join(failures)
