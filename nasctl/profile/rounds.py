"""Profiling on a budget, in rounds: which archs of a pool are worth measuring on a new device.

A round picks `budget` archs (`predict.transfer.choose`: the most informative under the prior
devices, given the rows already measured) and is written beside the row store
(`<store>.rounds.json`) before anything is measured. A rerun then resumes the open round (the
store skips what is done; `--retry-errors` retries its error rows); once every arch of a round
has an ok row, the same command starts the next round, which goes where the fit is least sure.
Fleets need nothing more: a round's archs are sharded like any others.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from nasctl.errors import UserError
from nasctl.profile.store import Store
from nasctl.space.space import Arch, SearchSpace
from nasctl.tables import atomic_write, to_json


def rounds_path(store: Store) -> Path:
    return store.path.with_name(store.path.name + ".rounds.json")


def _rounds(path: Path) -> list[dict]:
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text())
        rounds = doc["rounds"]
        if not all(isinstance(r.get("arch_ids"), list) for r in rounds):
            raise ValueError("a round without arch_ids")
        return rounds
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: damaged rounds file ({e}); remove it to choose afresh") from None


def budget_round(store: Store, device: str, space: SearchSpace, pool: list[Arch], budget: int, priors: tuple = ()) -> tuple[list[Arch], dict]:
    """The archs to measure now on `device` and what the round is: the open round's archs if one
    is open, else `budget` new ones chosen from `pool` (the archs not yet tried there)."""
    from nasctl.predict.transfer import choose, transfer_features

    path = rounds_path(store)
    rounds = _rounds(path)
    df = store.frame()
    mine = df[df["device"] == device] if not df.empty and "device" in df else df.iloc[0:0]
    ok = set(mine.loc[mine["status"] == "ok", "arch_id"]) if len(mine) else set()
    by_id = {a.id: a for a in pool}
    if rounds and not set(rounds[-1]["arch_ids"]) <= ok:
        last = rounds[-1]
        lost = [i for i in last["arch_ids"] if i not in by_id]
        if lost:
            raise UserError(f"{path}: round {len(rounds)} holds {len(lost)} archs that are not in this pool; "
                            "give the pool it was chosen from")
        return [by_id[i] for i in last["arch_ids"]], {"round": len(rounds), "resumed": True, "budget": len(last["arch_ids"])}
    tried = set(mine["arch_id"]) if len(mine) else set()
    fresh = [a for a in pool if a.id not in tried]
    measured = np.stack([space.parse(s).indices for s in mine.loc[mine["status"] == "ok", "arch"]]) if ok else None
    features = transfer_features(space, [p.table for p in priors])
    picked = choose(space, np.stack([a.indices for a in fresh]) if fresh else np.zeros((0, space.num_layers), int),
                    budget, features, measured)
    chosen = [fresh[i] for i in picked]
    rounds.append({"round": len(rounds) + 1, "device": device, "budget": budget, "priors": [p.meta() for p in priors],
                   "measured_before": len(ok), "chosen_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "arch_ids": [a.id for a in chosen]})
    atomic_write(path, to_json({"rounds": rounds}, indent=2).encode())
    return chosen, {"round": len(rounds), "resumed": False, "budget": budget}
