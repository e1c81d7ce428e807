"""A tabular benchmark as a trainer and as a device: an arch in, the table's figure out.

    python benchmarks/lookup.py top1 TABLE.json ARCH      # prints top1=<fraction>   (--trainer)
    python benchmarks/lookup.py latency TABLE.json ARCH   # prints latency_ms=<ms>   (a command device)

TABLE.json maps canonical arch strings to figures (`benchmarks/tabular.py tables` writes them
from the shipped tables and this machine's measurements). Every query is appended to
$NASCTL_LOOKUP_LOG (one JSON line: what was asked, when), so a benchmark can count what a
search saw. Stdlib only: it starts in milliseconds, as a trainer that answers at once should.
"""

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("top1", "latency"):
        print("usage: lookup.py top1|latency TABLE.json ARCH", file=sys.stderr)
        return 2
    what, path, arch = argv
    with open(path) as f:
        table = json.load(f)
    log = os.environ.get("NASCTL_LOOKUP_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"what": what, "table": os.path.basename(path), "arch": arch, "at": time.time()}) + "\n")
    if arch not in table:
        print(f"{arch}: not in {path}", file=sys.stderr)
        return 1
    print(f"{'top1' if what == 'top1' else 'latency_ms'}={table[arch]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
