"""What every benchmark script does to run nasctl: the real CLI, JSON out, stop on failure."""

import json
import subprocess
import sys


def nasctl(*args) -> dict:
    p = subprocess.run([sys.executable, "-m", "nasctl", *map(str, args), "--json", "-q"], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"nasctl {' '.join(map(str, args))} failed ({p.returncode}): {p.stderr.strip()}")
    return json.loads(p.stdout)
