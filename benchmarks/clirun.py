"""What every benchmark script does to run nasctl: the real CLI, JSON out, stop on failure."""

import json
import subprocess
import sys


def nasctl(*args, ok=(0,)) -> dict:
    """Run nasctl with --json; exit codes outside `ok` stop the benchmark with nasctl's message."""
    p = subprocess.run([sys.executable, "-m", "nasctl", *map(str, args), "--json", "-q"], capture_output=True, text=True)
    if p.returncode not in ok:
        sys.exit(f"nasctl {' '.join(map(str, args))} failed ({p.returncode}): {p.stderr.strip()}")
    return json.loads(p.stdout)
