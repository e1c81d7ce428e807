"""The host-agent protocol in one place: nasctl (the host) and agent.py (the device) both import
it, so a message key or a timing default cannot drift between the two sides.

Stdlib only: it ships to the boards inside the agent's zipapp. The agent answers on stdout with
one JSON object per line: first a hello ({FACTS: ...} or {FATAL: ..., KIND: ...}), then one row
per request ({KEY: ...}), with {WAITING: ...} notes and {BEAT: n} heartbeats in between.
"""

from __future__ import annotations

import json

FACTS = "facts"  # the hello: what the device is (CPU, runtime, energy rails, power mode)
FATAL = "fatal"  # the agent refuses to start (or a one-shot command failed), with KIND
KIND = "kind"  # config: the profile cannot work there; busy: another agent holds the device; runtime
WAITING = "waiting"  # a note for the user while the device lock is held elsewhere
BEAT = "beat"  # "still here", every --heartbeat seconds, so a slow arch is not a dead link
KEY = "key"  # a request's id, echoed by its row
MODEL = "model"  # the model file a request asks the agent to time

# Defaults of the timing protocol; a device profile's [protocol] table overrides them.
TIMING = {
    "warmup_runs": 5,  # the first runs allocate and page in weights
    "warmup_s": 0.1,
    "min_runs": 10,
    "min_time_s": 1.0,  # at least this long inside timed runs: the CI then means something
    "max_runs": 2000,
    "max_time_s": 10.0,
    "ci_rel": 0.01,  # stop once the 95% CI of the median lies within +-1% of it
    # Another process on the free cores (a compile, a pip install, a test run) slows a 1-thread
    # run here by up to 15-20%, and loads of 30-50% still shift it by several %. The local host's
    # own exporter is not counted (--exclude-pid). Above this share, time again.
    "max_other_busy": 0.3,
    "interference_retries": 2,
    # Throttling: a CPU (or, with clocks locked, GPU/EMC) clock under this share of its top just
    # after the timed runs marks the row throttled. 0 turns the clock test off.
    "min_clock_ratio": 0.85,
    "cooldown_c": 0,  # > 0: before each timing, wait until the hottest thermal zone is below this
    "cooldown_max_s": 300,  # ... but no longer than this; then time anyway (and say if throttled)
}


def request(key: str, model: str) -> str:
    """One request line: time this model file and answer with a row carrying `key`."""
    return json.dumps({KEY: key, MODEL: model}) + "\n"


def read_request(line: bytes | str) -> tuple[str | None, str]:
    """(key, model) of a request line; ValueError, with the key where one could be read, if bad."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"not a UTF-8 request line: {line.strip()[:120]!r}") from None
    try:
        doc = json.loads(line)
    except ValueError:
        raise ValueError(f"not a JSON request line: {line.strip()[:120]!r}") from None
    key = doc.get(KEY) if isinstance(doc, dict) else None
    if not isinstance(key, str) or not isinstance(doc.get(MODEL), str):
        raise ValueError(f"a request needs string {KEY!r} and {MODEL!r}: {line.strip()[:120]!r}")
    return key, doc[MODEL]


def last_line(text: str, default: str = "", limit: int = 300) -> str:
    """The last non-empty line of a tool's output: what a one-line error quotes."""
    lines = text.strip().splitlines()
    return (lines[-1] if lines else default)[:limit]
