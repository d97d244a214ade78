from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis as sync_redis_lib
import redis.asyncio as aioredis

from alerts.responders.service import volunteer_exists
from locator.app import create_app
from locator.core.auth import Role, create_token
from locator.core.clock import ManualClock
from locator.core.deps import AppContext
from locator.core.mqtt import MqttPublisher
from locator.core.redis import async_client, sync_client
from locator.core.settings import load_settings
from tests.servers import (
    clean_cluster_keys,
    clean_homeward_keys,
    mqtt_broker,
    redis_cluster,
    redis_server,
)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real 3-master Redis Cluster of the same 6.2 binary (slots assigned by us)."""
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as url:
        yield url


@pytest.fixture
def cluster(cluster_url: str) -> Iterator[sync_redis_lib.Redis]:
    """A cluster client (the service's own factory) on a cluster cleaned of our keys."""
    clean_cluster_keys(cluster_url)
    client = sync_client(cluster_url, process="test", cluster=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def mqtt_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with mqtt_broker(tmp_path_factory.mktemp("mqtt")) as url:
        yield url


BACKENDS = ["single", "cluster"]
# A test (or a module's ``pytestmark``) run on both stores: the single test Redis and the
# local 3-master Redis Cluster, the app built with REDIS_CLUSTER semantics on the latter.
both_backends = pytest.mark.parametrize("store_backend", BACKENDS, indirect=True)


@pytest.fixture
def store_backend(request: pytest.FixtureRequest) -> str:
    """The store the API runs on: the single test Redis unless a test asks for both."""
    return str(getattr(request, "param", "single"))


@pytest.fixture
def on_cluster(store_backend: str) -> bool:
    return store_backend == "cluster"


@pytest.fixture
def store_url(request: pytest.FixtureRequest, on_cluster: bool) -> str:
    """The URL of the store under test (any node of the cluster on the cluster backend)."""
    return str(request.getfixturevalue("cluster_url" if on_cluster else "redis_url"))


@pytest.fixture
async def redis(store_url: str, on_cluster: bool) -> AsyncIterator[aioredis.Redis]:
    """An async client (the service's own factory) on the cleaned store under test."""
    if on_cluster:
        clean_cluster_keys(store_url)
    else:
        clean_homeward_keys(store_url)
    client = async_client(store_url, process="test", cluster=on_cluster)
    yield client
    await client.aclose()


@pytest.fixture
def alerts_client(
    redis: object, store_url: str, on_cluster: bool
) -> Iterator[sync_redis_lib.Redis]:
    """A blocking client on the cleaned store under test, with the alerts consumer groups made."""
    from locator.alerts_loop import ensure_groups

    sync = sync_client(store_url, process="test", cluster=on_cluster)
    ensure_groups(sync)
    yield sync
    sync.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@dataclass
class Api:
    """An HTTP client on the real app plus a token per role."""

    http: httpx.AsyncClient
    redis: aioredis.Redis
    tokens: dict[str, str]
    clock: ManualClock

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def token(self, role: Role, subject: str | None = None) -> str:
        token, _ = await create_token(
            self.redis,
            role=role,
            subject=subject,
            created_at=self.clock.time(),
            volunteer_exists=lambda vid: volunteer_exists(self.redis, volunteer_id=vid),
        )
        return token


@pytest.fixture
async def api(
    redis: aioredis.Redis,
    store_url: str,
    on_cluster: bool,
    mqtt_url: str,
    clock: ManualClock,
    tmp_path: Path,
) -> AsyncIterator[Api]:
    """The app on the store under test; on a cluster with ``REDIS_CLUSTER`` semantics."""
    settings = load_settings(data_dir=tmp_path, redis_cluster=on_cluster)
    app = create_app(settings, redis_url=store_url, mqtt_url=mqtt_url, clock=clock)
    # ASGITransport does not run the lifespan: hand the app its context directly.
    publisher = MqttPublisher(mqtt_url, client_id=f"test-api-{uuid.uuid4().hex[:8]}")
    sync_redis = sync_client(store_url, process="test", cluster=on_cluster)
    app.state.ctx = AppContext(
        settings=settings,
        redis=redis,
        clock=clock,
        mqtt_url=mqtt_url,
        publisher=publisher,
        sync_redis=sync_redis,
    )
    tokens = {}
    for who, role, subject in [
        ("admin", Role.ADMIN, None),
        ("dispatcher", Role.DISPATCHER, None),
        ("guardian_a", Role.GUARDIAN, "fam-a"),
        ("guardian_b", Role.GUARDIAN, "fam-b"),
    ]:
        tokens[who], _ = await create_token(
            redis, role=role, subject=subject, created_at=clock.time()
        )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://homeward.test") as http:
        yield Api(http=http, redis=redis, tokens=tokens, clock=clock)
    publisher.close()
    sync_redis.close()
