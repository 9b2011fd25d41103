"""Token-bucket rate limiting shared across processes through Redis.

Generic: a bucket is a key, a refill rate (tokens per second) and a capacity
(burst). :meth:`acquire` takes ``cost`` tokens if the bucket holds them and
answers whether it did and, if not, how long until it would. ``cost=0``
only peeks: allowed while at least one token is left, nothing is taken.

:class:`RedisRateLimiter` keeps each bucket in a Redis hash updated by one
Lua script (run with EVALSHA), so concurrent processes share the bucket
atomically and all use the Redis server's clock. :class:`MemoryRateLimiter`
is the same algorithm in process memory on an injected clock, for tests and
single-process deployments. Both return Deferreds.

Bucket keys are wrapped in a ``{...}`` hash tag, so each bucket stays in one
Redis Cluster slot.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import attrs
from twisted.internet import defer

#: KEYS[1] bucket; ARGV rate (tokens/s), burst, cost. Returns
#: {allowed (0/1), retry_after_ms, tokens left (string)}.
TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
local elapsed = now - ts
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate / 1000)
local allowed = 0
local retry = 0
if cost == 0 then
  if tokens >= 1 then allowed = 1 else retry = math.ceil((1 - tokens) * 1000 / rate) end
elseif tokens >= cost then
  allowed = 1
  tokens = tokens - cost
else
  retry = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, retry, tostring(tokens)}
"""


@attrs.frozen
class RateLimitDecision:
    """The answer for one request against one bucket."""

    allowed: bool
    #: When refused: milliseconds until the request would be allowed.
    retry_after_ms: int
    #: Tokens left in the bucket after this request.
    remaining: float


def _check_args(rate: float, burst: int, cost: int) -> None:
    if rate <= 0 or burst < 1 or cost < 0:
        raise ValueError(f"invalid bucket: rate={rate} burst={burst} cost={cost}")


def refill(tokens: float, last_ms: int, now_ms: int, rate: float, burst: int) -> float:
    """Tokens in a bucket at ``now_ms`` that held ``tokens`` at ``last_ms``."""
    return min(float(burst), tokens + max(0, now_ms - last_ms) * rate / 1000.0)


def take(tokens: float, rate: float, cost: int) -> tuple[bool, int, float]:
    """Try to take ``cost`` tokens: ``(allowed, retry_after_ms, tokens_after)``."""
    if cost == 0:
        if tokens >= 1:
            return True, 0, tokens
        return False, math.ceil((1 - tokens) * 1000 / rate), tokens
    if tokens >= cost:
        return True, 0, tokens - cost
    return False, math.ceil((cost - tokens) * 1000 / rate), tokens


class MemoryRateLimiter:
    """Token buckets in this process, timed by ``clock.seconds()``."""

    def __init__(self, clock: Any, max_buckets: int = 100000) -> None:
        self._clock = clock
        self._max = max_buckets
        self._buckets: dict[str, tuple[float, int]] = {}

    def acquire(self, key: str, rate: float, burst: int, cost: int = 1) -> "defer.Deferred[RateLimitDecision]":
        """Take ``cost`` tokens from bucket ``key`` if it has them."""
        _check_args(rate, burst, cost)
        now = int(self._clock.seconds() * 1000)
        tokens, last = self._buckets.get(key, (float(burst), now))
        tokens = refill(tokens, last, now, rate, burst)
        allowed, retry, left = take(tokens, rate, cost)
        if len(self._buckets) >= self._max and key not in self._buckets:
            # Full buckets carry no information: forget them first.
            for k in [k for k, (t, ts) in self._buckets.items() if refill(t, ts, now, rate, burst) >= burst]:
                del self._buckets[k]
        self._buckets[key] = (left, now)
        return defer.succeed(RateLimitDecision(allowed, retry, left))


class RedisRateLimiter:
    """Token buckets in Redis, shared by every process using the same server.

    ``client`` is a ``redis.asyncio.Redis``; the reactor must be the asyncio
    reactor (the coroutine is scheduled on the running loop).
    """

    def __init__(self, client: Any, prefix: str = "ratelimit") -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(TOKEN_BUCKET_LUA)

    def bucket_key(self, key: str) -> str:
        """The Redis key of bucket ``key`` (hash-tagged for Cluster)."""
        return f"{self._prefix}:{{{key}}}"

    def acquire(self, key: str, rate: float, burst: int, cost: int = 1) -> "defer.Deferred[RateLimitDecision]":
        """Take ``cost`` tokens from bucket ``key`` if it has them."""
        _check_args(rate, burst, cost)

        async def run() -> RateLimitDecision:
            # Script.__call__ sends EVALSHA and loads the script on NOSCRIPT.
            allowed, retry, left = await self._script(keys=[self.bucket_key(key)], args=[repr(float(rate)), burst, cost])
            if isinstance(left, bytes):
                left = left.decode("ascii")
            return RateLimitDecision(bool(int(allowed)), int(retry), float(left))

        return defer.Deferred.fromFuture(asyncio.ensure_future(run()))
