"""Evaluation records, results, batches, problems and their indexes, in Redis or in memory.

Both backends implement the same few key-value primitives (`RedisKV`, `MemoryKV`); `Store` holds
the key layout and the JSON records on top of them. Every key expires after the result TTL.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis

PREFIX = "referee:"


# Set KEYS[1] to ARGV[1] (expiring in ARGV[2] s) unless it exists; reply the value already there, or
# nil. What `SET key value EX ttl NX GET` does on Redis 7.0+, as a script that Redis 6.2 runs too.
_CLAIM = """
local previous = redis.call('get', KEYS[1])
if previous then return previous end
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""


class RedisKV:
    def __init__(self, connection: redis.Redis) -> None:
        self.r = connection
        self._claim = connection.register_script(_CLAIM)

    def get(self, key: str) -> str | None:
        value = self.r.get(PREFIX + key)
        return value.decode() if isinstance(value, bytes) else value

    def get_many(self, keys: list[str]) -> list[str | None]:
        if not keys:
            return []
        return [v.decode() if isinstance(v, bytes) else v for v in self.r.mget([PREFIX + k for k in keys])]

    def put(self, key: str, value: str, ttl: int) -> None:
        self.r.set(PREFIX + key, value, ex=ttl)

    def claim(self, key: str, value: str, ttl: int) -> str | None:
        """Set `key` unless it exists; return the value already there (None when this call set it)."""
        previous = self._claim(keys=[PREFIX + key], args=[value, ttl])
        return previous.decode() if isinstance(previous, bytes) else previous

    def put_and_claim(self, puts: list[tuple[str, str]], claims: list[tuple[str, str]], ttl: int) -> list[str | None]:
        """`put` each of `puts`, then `claim` each of `claims`, in one round trip; the claims' previous values."""
        with self.r.pipeline(transaction=False) as pipe:
            for key, value in puts:
                pipe.set(PREFIX + key, value, ex=ttl)
            for key, value in claims:
                self._claim(keys=[PREFIX + key], args=[value, ttl], client=pipe)
            replies = pipe.execute()[len(puts) :]
        return [v.decode() if isinstance(v, bytes) else v for v in replies]

    def delete(self, keys: list[str]) -> None:
        if keys:
            self.r.delete(*[PREFIX + k for k in keys])

    def delete_if(self, key: str, value: str) -> None:
        # Compare-and-delete in one step so a concurrent claim is never removed.
        self.r.eval(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0", 1, PREFIX + key, value
        )

    def set_add_count(self, key: str, members: Iterable[str], ttl: int, also: str | None = None) -> int:
        """Add members and return the set's size, atomically; with `also`, add them to that set too (same round trip)."""
        members = list(members)
        if not members:
            return int(self.r.scard(PREFIX + key))
        with self.r.pipeline(transaction=True) as pipe:
            if also is not None:
                pipe.sadd(PREFIX + also, *members)
                pipe.expire(PREFIX + also, ttl)
            pipe.sadd(PREFIX + key, *members)
            pipe.expire(PREFIX + key, ttl)
            pipe.scard(PREFIX + key)
            return int(pipe.execute()[-1])

    def set_remove(self, key: str, members: Iterable[str]) -> None:
        members = list(members)
        if members:
            self.r.srem(PREFIX + key, *members)

    def set_members(self, key: str) -> list[str]:
        return sorted(m.decode() if isinstance(m, bytes) else m for m in self.r.smembers(PREFIX + key))

    def ping(self) -> bool:
        return bool(self.r.ping())


class MemoryKV:
    """The same primitives in a dict, for embedded mode; expiry is checked on access."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, tuple[Any, float]] = {}

    def _live(self, key: str) -> Any:
        item = self._values.get(key)
        if item is None:
            return None
        if item[1] < time.monotonic():
            del self._values[key]
            return None
        return item[0]

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._live(key)

    def get_many(self, keys: list[str]) -> list[str | None]:
        with self._lock:
            return [self._live(k) for k in keys]

    def put(self, key: str, value: str, ttl: int) -> None:
        with self._lock:
            self._values[key] = (value, time.monotonic() + ttl)

    def claim(self, key: str, value: str, ttl: int) -> str | None:
        with self._lock:
            previous = self._live(key)
            if previous is None:
                self._values[key] = (value, time.monotonic() + ttl)
            return previous

    def put_and_claim(self, puts: list[tuple[str, str]], claims: list[tuple[str, str]], ttl: int) -> list[str | None]:
        for key, value in puts:
            self.put(key, value, ttl)
        return [self.claim(key, value, ttl) for key, value in claims]

    def delete(self, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._values.pop(key, None)

    def delete_if(self, key: str, value: str) -> None:
        with self._lock:
            if self._live(key) == value:
                del self._values[key]

    def set_add_count(self, key: str, members: Iterable[str], ttl: int, also: str | None = None) -> int:
        members = list(members)
        if also is not None:
            self.set_add_count(also, members, ttl)
        with self._lock:
            current = self._live(key) or set()
            current |= set(members)
            self._values[key] = (current, time.monotonic() + ttl)
            return len(current)

    def set_remove(self, key: str, members: Iterable[str]) -> None:
        with self._lock:
            current = self._live(key)
            if current:
                current -= set(members)

    def set_members(self, key: str) -> list[str]:
        with self._lock:
            return sorted(self._live(key) or ())

    def ping(self) -> bool:
        return True


PENDING = "pending"  # every evaluation queued and not yet final, for the maintenance sweep


class Store:
    """Records as JSON under one key layout:

    eval:{id} the record · result:{id} the final document · dedup:{owner}:{hash} -> id ·
    idem:{owner}:{kind}:{key} -> {"body", "id"} · active:{owner} ids not final · batch:{id} ·
    problem:{owner}:{sha256}
    """

    def __init__(self, kv: RedisKV | MemoryKV, ttl: int) -> None:
        self.kv = kv
        self.ttl = ttl

    def _get_json(self, key: str) -> dict[str, Any] | None:
        value = self.kv.get(key)
        return json.loads(value) if value is not None else None

    def _put_json(self, key: str, value: dict[str, Any]) -> None:
        self.kv.put(key, json.dumps(value), self.ttl)

    # evaluations
    def delete_evaluations(self, ids: list[str]) -> None:
        self.kv.delete([f"eval:{i}" for i in ids])

    def evaluation(self, evaluation_id: str) -> dict[str, Any] | None:
        return self._get_json(f"eval:{evaluation_id}")

    def evaluations(self, ids: list[str]) -> list[dict[str, Any] | None]:
        return [json.loads(v) if v is not None else None for v in self.kv.get_many([f"eval:{i}" for i in ids])]

    def result(self, evaluation_id: str) -> dict[str, Any] | None:
        return self._get_json(f"result:{evaluation_id}")

    def results(self, ids: list[str]) -> list[dict[str, Any] | None]:
        return [json.loads(v) if v is not None else None for v in self.kv.get_many([f"result:{i}" for i in ids])]

    def save_result(self, evaluation_id: str, owner: str, document: dict[str, Any]) -> bool:
        """Store the final document unless one is there already (first writer wins); True if this one won."""
        won = self.kv.claim(f"result:{evaluation_id}", json.dumps(document), self.ttl) is None
        self.kv.set_remove(f"active:{owner}", [evaluation_id])
        self.kv.set_remove(PENDING, [evaluation_id])
        return won

    def put_evaluations_and_claim(self, owner: str, records: list[dict[str, Any]], digests: list[str]) -> list[str | None]:
        """Write the records, then claim each one's dedup entry, in one round trip: the ids already
        holding the claims (None where this record's id won). Records go first, so a claimed id always has one."""
        return self.kv.put_and_claim(
            [(f"eval:{r['id']}", json.dumps(r)) for r in records],
            [(f"dedup:{owner}:{d}", r["id"]) for r, d in zip(records, digests, strict=True)],
            self.ttl,
        )

    # dedup and idempotency
    def replace_dedup(self, owner: str, digest: str, evaluation_id: str) -> None:
        self.kv.put(f"dedup:{owner}:{digest}", evaluation_id, self.ttl)

    def release_dedup(self, owner: str, digest: str, evaluation_id: str) -> None:
        self.kv.delete_if(f"dedup:{owner}:{digest}", evaluation_id)

    def idempotent(self, owner: str, kind: str, key: str) -> dict[str, Any] | None:
        return self._get_json(f"idem:{owner}:{kind}:{key}")

    def claim_idempotent(self, owner: str, kind: str, key: str, body: str, target_id: str) -> dict[str, Any] | None:
        previous = self.kv.claim(f"idem:{owner}:{kind}:{key}", json.dumps({"body": body, "id": target_id}), self.ttl)
        return json.loads(previous) if previous is not None else None

    # the per-key queued limit
    def reserve(self, owner: str, ids: list[str], limit: int) -> bool:
        """Count `ids` as active for `owner` and pending for the sweep, unless that makes more than
        `limit` active; all or nothing. (Pending before enqueued is fine: the sweep gives a job
        missing from the queue a grace period.)"""
        if self.kv.set_add_count(f"active:{owner}", ids, self.ttl, also=PENDING) > limit:
            self.release(owner, ids)
            return False
        return True

    def release(self, owner: str, ids: list[str]) -> None:
        self.kv.set_remove(f"active:{owner}", ids)
        self.kv.set_remove(PENDING, ids)

    def active(self, owner: str) -> list[str]:
        return self.kv.set_members(f"active:{owner}")

    def pending(self) -> list[str]:
        return self.kv.set_members(PENDING)

    # batches and problems
    def put_batch(self, batch: dict[str, Any]) -> None:
        self._put_json(f"batch:{batch['id']}", batch)

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        return self._get_json(f"batch:{batch_id}")

    def put_problem(self, owner: str, problem: dict[str, Any]) -> None:
        self._put_json(f"problem:{owner}:{problem['id']}", problem)

    def problem(self, owner: str, problem_id: str) -> dict[str, Any] | None:
        return self._get_json(f"problem:{owner}:{problem_id}")
