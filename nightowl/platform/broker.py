"""Direct Redis access for what Celery does not expose: queue depths and liveness."""

from __future__ import annotations

import redis

from nightowl.common.config import Settings


def broker_url(settings: Settings) -> str:
    """The broker's URL as redis-py reads it (a unix socket is redis+socket:// for Celery)."""
    url = settings.broker_url
    if url.startswith("redis+socket://"):
        return "unix://" + url.removeprefix("redis+socket://")
    return url


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(broker_url(settings), socket_timeout=5,
                                socket_connect_timeout=2)


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
