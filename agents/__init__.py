"""Device-side code: `agent.py` and `protocol.py`, deployed as one zipapp; keep them stdlib-only."""
