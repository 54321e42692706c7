#!/usr/bin/env python3
"""Fills a migrated Gatehouse SQLite database with many valid API keys, fast (bench/run's
BENCH_SCALE=1 part).

    bench/gen_keys.py DB ORG_ID COUNT SPREAD_FILE SPREAD [PREFIX]

Inserts COUNT live keys of organization ORG_ID straight into `api_keys` (one transaction,
no audit entries: this is storage filling, not an API call), and writes the first SPREAD
full keys to SPREAD_FILE, one a line, for the load to use.

A key is built exactly as src/auth/api_key.rs mints one: `{prefix}_live_` + 43 base62
characters + the 6-character base62 CRC32 of everything before it; the row stores only
its SHA-256 (hex, of the whole key, src/auth/tokens.rs `sha256_hex`) and its first 12
characters as `start`, as src/keys.rs does. The bodies come from a seeded PRNG, not the
OS's: these keys guard nothing, and the run is faster and reproducible.

Fast because a million rows is most of BENCH_SCALE=1's setup: the ids are UUID v7 as
src/ids.rs mints them (time first), here in increasing order, so the primary key's B-tree
only grows at its end; the fill runs without the WAL (a rollback journal in memory,
`synchronous=OFF`, a cache large enough for the key-hash index), and the database is put
back in WAL mode, as Gatehouse opens it, at the end.
"""

import hashlib
import random
import sqlite3
import sys
import time
import zlib

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Byte -> base62 character; byte % 62 favours the first eight characters a little, which does
# not matter for keys that guard nothing, and makes a body one randbytes and one translate.
TO_BASE62 = bytes(ord(BASE62[b % 62]) for b in range(256))
BODY_LEN = 43
CHECKSUM_LEN = 6
START_LEN = 12


def checksum(head: str) -> str:
    n = zlib.crc32(head.encode())
    out = []
    for _ in range(CHECKSUM_LEN):
        out.append(BASE62[n % 62])
        n //= 62
    return "".join(reversed(out))


def main() -> int:
    if len(sys.argv) not in (6, 7):
        print(__doc__, file=sys.stderr)
        return 2
    db, org_id, count, spread_file, spread = sys.argv[1:6]
    prefix = sys.argv[6] if len(sys.argv) == 7 else "gk"
    count, spread = int(count), int(spread)
    rng = random.Random(20261123)
    now = int(time.time() * 1000)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=MEMORY")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-524288")  # KiB: 512 MiB, more than the file grows to
    if conn.execute("SELECT 1 FROM organizations WHERE id = ?", (org_id,)).fetchone() is None:
        print(f"gen_keys.py: no organization {org_id} in {db}", file=sys.stderr)
        return 1
    sql = (
        "INSERT INTO api_keys (id, org_id, key_hash, start, name, scopes, environment, metadata,"
        " created_by, created_at, expires_at, last_used_at, revoked_at, rolled_to, rate_limits)"
        " VALUES (?, ?, ?, ?, ?, ?, 'live', '{}', 'bench', ?, NULL, NULL, NULL, NULL, NULL)"
    )
    head0 = f"{prefix}_live_"
    v7_head = (now << 80) | (0x7 << 76)
    batch = []
    with open(spread_file, "w") as out:
        conn.execute("BEGIN")
        for i in range(count):
            head = head0 + rng.randbytes(BODY_LEN).translate(TO_BASE62).decode()
            key = head + checksum(head)
            if i < spread:
                out.write(key + "\n")
            # UUID v7: 48 bits of ms, version 7, 12 bits, variant 0b10, 62 bits (a counter).
            batch.append((
                "key_%032x" % (v7_head | (0b10 << 62) | i),
                org_id,
                hashlib.sha256(key.encode()).hexdigest(),
                key[:START_LEN],
                f"bench {i}",
                '["keys:read"]',
                now,
            ))
            if len(batch) == 50_000:
                conn.executemany(sql, batch)
                batch.clear()
        if batch:
            conn.executemany(sql, batch)
        conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
