"""Conformance client for trimtab's CQL stand-in: the DataStax Python driver with its default settings.

Usage: cql_conformance.py HOST PORT
Connects, creates a keyspace and a table, inserts (simple and prepared), runs a batch, reads back,
asserts what it read and prints one JSON line with what it saw.
"""
import json
import sys

from cassandra.cluster import Cluster
from cassandra.query import BatchStatement, BatchType


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    cluster = Cluster(contact_points=[host], port=port)
    session = cluster.connect()
    session.execute(
        "CREATE KEYSPACE IF NOT EXISTS py WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    session.execute(
        "CREATE TABLE IF NOT EXISTS py.events (stream text, day text, message_id text, n bigint, payload text, "
        "PRIMARY KEY ((stream, day), message_id))"
    )
    session.set_keyspace("py")
    session.execute(
        "INSERT INTO events (stream, day, message_id, n, payload) VALUES (%s, %s, %s, %s, %s)",
        ("s", "2026-11-22", "simple", 1, '{"via":"simple"}'),
    )
    insert = session.prepare("INSERT INTO events (stream, day, message_id, n, payload) VALUES (?, ?, ?, ?, ?)")
    session.execute(insert, ("s", "2026-11-22", "prepared", 2, '{"via":"prepared"}'))
    batch = BatchStatement(batch_type=BatchType.UNLOGGED)
    for i in range(20):
        batch.add(insert, ("s", "2026-11-22", "batch-%02d" % i, 100 + i, "{}"))
    session.execute(batch)
    # A redelivery of the same key overwrites.
    session.execute(insert, ("s", "2026-11-22", "prepared", 3, '{"via":"again"}'))

    select = session.prepare("SELECT message_id, n, payload FROM events WHERE stream = ? AND day = ?")
    rows = list(session.execute(select, ("s", "2026-11-22")))
    ids = [r.message_id for r in rows]
    assert len(rows) == 22, rows
    assert ids == sorted(ids), ids
    by_id = {r.message_id: r for r in rows}
    assert by_id["prepared"].n == 3 and by_id["prepared"].payload == '{"via":"again"}', by_id["prepared"]
    assert by_id["batch-07"].n == 107
    count = session.execute("SELECT COUNT(*) FROM events").one()[0]
    assert count == 22, count
    # DDL is answered with Void, so ask for the metadata explicitly: this parses the real system_schema rows.
    cluster.refresh_schema_metadata()
    table = cluster.metadata.keyspaces["py"].tables["events"]
    partition_key = [c.name for c in table.partition_key]
    clustering_key = [c.name for c in table.clustering_key]
    assert partition_key == ["stream", "day"], partition_key
    assert clustering_key == ["message_id"], clustering_key
    assert table.columns["n"].cql_type == "bigint", table.columns["n"].cql_type
    local = session.execute("SELECT release_version, cluster_name FROM system.local WHERE key = 'local'").one()
    print(json.dumps({
        "rows": len(rows),
        "count": count,
        "prepared_n": by_id["prepared"].n,
        "protocol_version": cluster.protocol_version,
        "release_version": local.release_version,
        "cluster_name": local.cluster_name,
        "keyspaces": sorted(cluster.metadata.keyspaces.keys()),
        "partition_key": partition_key,
    }))
    cluster.shutdown()


if __name__ == "__main__":
    main()
