#!/usr/bin/env python3
"""Ways to write a small log frame durably, on the file system of a directory:
packed frames (each after the previous, so each rewrites the tail page) or one
4 KiB page per frame; pwrite + fdatasync, pwritev(RWF_DSYNC), or an O_DSYNC file.
Interleaved rounds; prints p50 and p90 of each, in microseconds.

Usage: bench/queue/log-write-probe.py [DIR] [WRITES] [ROUNDS] [GAP_US]
GAP_US: busy-wait this long between two writes (one job at a time leaves the
device idle between flushes; 0: back to back, as `switchyard-bench flush`).
(hold /tmp/switchyard-bench.lock while it runs on a shared machine)."""
import os
import sys
import time

D = sys.argv[1] if len(sys.argv) > 1 else "."
N = int(sys.argv[2]) if len(sys.argv) > 2 else 400
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
GAP_NS = int(sys.argv[4]) * 1000 if len(sys.argv) > 4 else 0
SIZE = 8 << 20
FRAME = b"\xa5" * 300
MODES = ["packed", "aligned", "aligned_pad4k", "rwf_dsync_aligned", "rwf_dsync_packed",
         "odsync_aligned"]


def run(mode):
    path = os.path.join(D, f".log-write-probe.{os.getpid()}.{mode}")
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | (os.O_DSYNC if mode == "odsync_aligned" else 0)
    fd = os.open(path, flags, 0o600)
    try:
        # Written ahead and synced, as the store's log is: frames only overwrite data.
        os.pwrite(fd, b"\0" * SIZE, 0)
        os.fsync(fd)
        step = 300 if mode.endswith("packed") else 4096
        frame = FRAME + b"\0" * (4096 - len(FRAME)) if mode == "aligned_pad4k" else FRAME
        pos, lat = 0, []
        for _ in range(N):
            t = time.perf_counter_ns()
            if mode.startswith("rwf_dsync"):
                os.pwritev(fd, [frame], pos, os.RWF_DSYNC)
            else:
                os.pwrite(fd, frame, pos)
                if mode != "odsync_aligned":
                    os.fdatasync(fd)
            lat.append(time.perf_counter_ns() - t)
            pos += step
            until = time.perf_counter_ns() + GAP_NS
            while time.perf_counter_ns() < until:
                pass
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    return lat[len(lat) // 2] / 1000, lat[int(len(lat) * 0.9)] / 1000


res = {m: [] for m in MODES}
for _ in range(ROUNDS):
    for m in MODES:
        res[m].append(run(m))
for m in MODES:
    print(f"{m:18s}", "  ".join(f"p50 {a:5.0f} p90 {b:5.0f}" for a, b in res[m]))
