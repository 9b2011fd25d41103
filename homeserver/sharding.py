"""Which shard a room or a user belongs to.

DESIGN.md §3: "Shard of a room = stable hash(room_id) mod N". The function is
fixed for the life of an installation (positions are stored per shard), so it
is chosen once, here, with one extra property: nginx can compute it. The hash
is MurmurHash2 exactly as nginx's ``split_clients`` computes it
(``ngx_murmur_hash2``: seed = length), and the bucket boundaries are the ones
``split_clients`` derives from percentages given with two decimals. The
generated nginx config therefore routes a room's writes straight to the
instance owning its shard, and the built-in router agrees with it byte for
byte (a test runs both when nginx is installed).

For ``n`` shards, shards ``0 .. n-2`` each get ``floor(10000 / n)``
hundredths of a percent of the 32-bit hash space and the last shard takes the
rest (``*`` in nginx terms).
"""

from __future__ import annotations

from functools import lru_cache

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur_hash2(data: bytes) -> int:
    """32-bit MurmurHash2 with nginx's seeding (``h = len``)."""
    length = len(data)
    h = length & _MASK
    i = 0
    while length - i >= 4:
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
        i += 4
    rest = length - i
    if rest == 3:
        h ^= data[i + 2] << 16
    if rest >= 2:
        h ^= data[i + 1] << 8
    if rest >= 1:
        h ^= data[i]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def shard_percent_hundredths(count: int) -> int:
    """The share of each of the first ``count - 1`` shards, in 1/100 of a percent."""
    return 10000 // count


@lru_cache(maxsize=64)
def _boundaries(count: int) -> tuple[int, ...]:
    # split_clients accumulates the truncated share of each part.
    part = shard_percent_hundredths(count) * 0xFFFFFFFF // 10000
    return tuple(part * (i + 1) for i in range(count - 1))


def shard_for(key: str, count: int) -> int:
    """The shard (0 .. count-1) of a room ID or user ID."""
    if count <= 1:
        return 0
    h = murmur_hash2(key.encode("utf-8"))
    for shard, bound in enumerate(_boundaries(count)):
        if h < bound:
            return shard
    return count - 1


def nginx_percent(count: int) -> str:
    """The percentage string nginx's ``split_clients`` takes for one shard."""
    hundredths = shard_percent_hundredths(count)
    return f"{hundredths // 100}.{hundredths % 100:02d}%"
