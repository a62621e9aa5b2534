"""Acknowledged means replicated: a write followed by ``WAIT`` on the same connection.

``WAIT n ms`` counts the replicas that acknowledged every write this connection made before it. Run on any
other connection it counts something else (that connection's own, older writes), so the write and the WAIT
go out as one pipeline: one connection, one round trip. A replica's acknowledgement means it received the
write, not that it is on disk (see README "Redis high availability").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from bot.errors import BrokerUnavailable


class NotReplicated(BrokerUnavailable):
    """The write reached the master but fewer replicas than required acknowledged it in time."""


@dataclass(frozen=True)
class ReplicaAck:
    """How many replicas must hold a write (0: none, no WAIT) and how long to wait for them."""

    replicas: int
    timeout_ms: int

    def check(self, acknowledged: int) -> None:
        """Raise NotReplicated when `acknowledged` (WAIT's answer) is short of the requirement."""
        if acknowledged < self.replicas:
            raise NotReplicated(
                f"{acknowledged} of {self.replicas} replica(s) acknowledged the write within "
                f"{self.timeout_ms} ms (REDIS_MIN_REPLICAS_ACK, REDIS_WAIT_TIMEOUT_MS)"
            )


async def eval_replicated(
    client: aioredis.Redis, script: str, keys: Sequence[str], args: Sequence[Any], ack: ReplicaAck
) -> Any:
    """EVAL `script`, then WAIT for `ack.replicas` on the same connection; the script's answer.

    Raises NotReplicated (a BrokerUnavailable: the sender should retry) when too few replicas acknowledged.
    """
    async with client.pipeline(transaction=False) as pipe:
        pipe.eval(script, len(keys), *keys, *args)
        pipe.execute_command("WAIT", ack.replicas, ack.timeout_ms)
        result, acknowledged = await pipe.execute()
    ack.check(int(acknowledged))
    return result
