"""Cluster keyspace: every name of one environment, and every name of one edge, hashes to
one slot (a hash tag), so each Lua script and MULTI touches a single slot."""

from __future__ import annotations

import uuid

from redis.crc import key_slot

from crivline.keyspace import Keyspace


def slot(name: str) -> int:
    return int(key_slot(name.encode()))


def test_every_name_of_an_environment_is_in_its_slot() -> None:
    ks = Keyspace("crivline:", "edge-eu-1")
    slots = set()
    for _ in range(50):
        env = str(uuid.uuid4())
        names = [
            ks.environment(env),
            ks.deltas(env),
            ks.environment_keys(env),
            ks.environment_changes(env),  # the sharded channel: published from the script
        ]
        assert len({slot(n) for n in names}) == 1, names
        slots.add(slot(names[0]))
    assert len(slots) > 40  # environments spread over the cluster, not one slot


def test_every_name_of_an_edge_is_in_its_slot() -> None:
    ks = Keyspace("crivline:", "edge-eu-1")
    names = [
        ks.served,
        ks.sync_state,
        ks.heartbeat,
        ks.ticket_secret,
        ks.plans,
        ks.usage,
        ks.usage_pending,
        ks.usage_batch,
        ks.usage_sequence,
        ks.usage_today,
        ks.edge_streams,
        ks.edge_changes,
    ]
    assert len({slot(n) for n in names}) == 1
    assert slot(Keyspace("crivline:", "edge-us-1").served) != slot(ks.served)
