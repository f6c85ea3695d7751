"""Direct Redis access for what Celery does not expose: queue depths and liveness."""

from __future__ import annotations

import redis

from nightowl.common.config import Settings


def redis_client(settings: Settings) -> redis.Redis:
    url = settings.broker_url
    if url.startswith("redis+socket://"):
        url = "unix://" + url.removeprefix("redis+socket://")
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)


def queue_depth(settings: Settings, queue: str) -> int | None:
    """Messages waiting in a queue, or None if the broker cannot be reached."""
    try:
        return int(redis_client(settings).llen(queue))
    except redis.RedisError:
        return None


def ping(settings: Settings) -> bool:
    try:
        return bool(redis_client(settings).ping())
    except redis.RedisError:
        return False
