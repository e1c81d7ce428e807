"""Device-side code. `agent.py` is copied as a single file to the devices; keep it stdlib-only."""
