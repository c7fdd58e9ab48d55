#!/usr/bin/env python3
"""Reads the Autobahn testsuite's report (reports/index.json of
`wstest -m fuzzingclient`), prints a table of case groups and results, and
exits 1 if any case is not passing.

Passing: behavior OK or INFORMATIONAL (UNIMPLEMENTED for the compression
cases 12.* and 13.*, which need permessage-deflate, not offered), and close
behavior OK or INFORMATIONAL (UNIMPLEMENTED for those cases too). Anything
else fails: FAILED, NON-STRICT, WRONG CODE, UNCLEAN, FAILED BY CLIENT, and
UNIMPLEMENTED outside 12.*/13.*.

    summary.py REPORT_DIR [--markdown FILE]
"""

import json
import sys
from collections import OrderedDict

# Autobahn's case groups (the first number of a case id).
GROUPS = OrderedDict(
    [
        ("1", "Framing (text and binary messages)"),
        ("2", "Pings/Pongs"),
        ("3", "Reserved bits"),
        ("4", "Opcodes"),
        ("5", "Fragmentation"),
        ("6", "UTF-8 handling"),
        ("7", "Close handling"),
        ("9", "Limits/performance"),
        ("10", "Misc (auto-fragmentation)"),
        ("12", "WebSocket compression (different payloads)"),
        ("13", "WebSocket compression (different parameters)"),
    ]
)
PASS = {"OK", "INFORMATIONAL"}
COMPRESSION = {"12", "13"}


def case_key(case_id):
    return [int(p) for p in case_id.split(".")]


def verdict(case_id, behavior, close):
    group = case_id.split(".")[0]
    allowed = PASS | ({"UNIMPLEMENTED"} if group in COMPRESSION else set())
    return behavior in allowed and close in allowed


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    outdir = argv[1]
    markdown = argv[3] if len(argv) > 3 and argv[2] == "--markdown" else None
    with open(outdir + "/index.json") as f:
        index = json.load(f)
    if not index:
        print("autobahn: the report holds no agent: did wstest reach the testee?", file=sys.stderr)
        return 1
    failed = []
    rows = []
    for agent, cases in index.items():
        groups = OrderedDict()
        for case_id in sorted(cases, key=case_key):
            r = cases[case_id]
            group = case_id.split(".")[0]
            counts = groups.setdefault(group, OrderedDict())
            b, c = r.get("behavior", "?"), r.get("behaviorClose", "?")
            label = b if b == c or c in PASS else "%s/close %s" % (b, c)
            counts[label] = counts.get(label, 0) + 1
            if not verdict(case_id, b, c):
                failed.append((agent, case_id, b, c, r.get("reportfile", "")))
        for group, counts in groups.items():
            total = sum(counts.values())
            results = ", ".join("%d %s" % (n, k) for k, n in counts.items())
            rows.append((agent, group, GROUPS.get(group, "?"), total, results))
    lines = [
        "| Group | Cases | Count | Results |",
        "|---|---|---|---|",
    ]
    for agent, group, name, total, results in rows:
        lines.append("| %s.* | %s | %d | %s |" % (group, name, total, results))
    total = sum(r[3] for r in rows)
    lines.append("| all | | %d | %d not passing |" % (total, len(failed)))
    table = "\n".join(lines)
    print(table)
    if markdown:
        with open(markdown, "w") as f:
            f.write(table + "\n")
    for agent, case_id, b, c, report in failed:
        print(
            "NOT PASSING: %s case %s: behavior %s, close %s (%s/%s)"
            % (agent, case_id, b, c, outdir, report),
            file=sys.stderr,
        )
    if failed:
        print("autobahn: %d of %d cases not passing" % (len(failed), total), file=sys.stderr)
        return 1
    print("autobahn: all %d cases pass" % total)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
