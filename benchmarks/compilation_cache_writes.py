"""What a write to JAX's persistent compilation cache costs as the cache grows, with a size limit
(JAX's file lock and least-recently-used eviction) and without one (-1, the test session's
setting), side by side.

For each cache size in ``--entries``, both caches are filled with that many entries of
``--entry-kb`` KiB (random bytes), then ``--writes`` new entries are written and read back through
``jax._src.lru_cache.LRUCache``, the class behind ``jax_compilation_cache_dir``. Reported: the
median milliseconds per write and per read. With a limit, every write lists and stats every entry
to decide what to evict.

Usage: ``python benchmarks/compilation_cache_writes.py [--entries 100 1000 3000] [--writes 20]
[--entry-kb 200]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[100, 1000, 3000])
    parser.add_argument("--writes", type=int, default=20)
    parser.add_argument("--entry-kb", type=int, default=200)
    args = parser.parse_args()
    from jax._src import lru_cache

    value = os.urandom(args.entry_kb * 1024)
    settings = {"limit 8 GiB (lock, eviction)": 8 << 30, "no limit (-1)": -1}
    rows = []
    with tempfile.TemporaryDirectory() as root:
        caches = {name: lru_cache.LRUCache(os.path.join(root, str(i)), max_size=size)
                  for i, (name, size) in enumerate(settings.items())}
        filled = 0
        for n in sorted(args.entries):
            for cache in caches.values():
                for i in range(filled, n):
                    cache.put(f"fill{i}", value)
            filled = n
            for name, cache in caches.items():
                writes, reads = [], []
                for i in range(args.writes):
                    start = time.perf_counter()
                    cache.put(f"new{n}_{i}", value)
                    writes.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    assert cache.get(f"new{n}_{i}") == value
                    reads.append(time.perf_counter() - start)
                rows.append((n, name, statistics.median(writes), statistics.median(reads)))
            filled += args.writes
    print(f"{args.entry_kb} KiB entries, {args.writes} writes and reads per point")
    print("| entries | cache | write, ms | read, ms |")
    print("|---|---|---|---|")
    for n, name, w, r in rows:
        print(f"| {n} | {name} | {w * 1000:.1f} | {r * 1000:.2f} |")


if __name__ == "__main__":
    main()
