"""A predictor-guided search: the most accurate net that meets every target, from a budget of
trainer runs (or from an accuracy predictor the user already has).

1. Candidates: every arch of the space where that is cheap (NAS-Bench-201, NAS-Bench-Macro),
   else a large uniform draw that a local search extends around the best (`Pool`).
2. Feasible: each latency or energy target met by its predictor's mean *plus a margin for the
   predictor's own error* (twice its ensemble std or twice its held-out MAPE, the larger), each
   params / MFLOPs budget counted exactly. With `--verify`, an arch whose mean meets the target
   but whose margin does not (or whose mean misses it by less than the margin) is measured on
   the device before it is trained, and its measurement decides.
   At most VERIFY_TRIES measurements may fail per proposal; then it takes from the archs the
   margin clears.
3. An initial design: `initial` feasible archs spread over MACs (one per quantile stratum).
4. Then each free trainer slot gets the candidate of the highest acquisition (EI, UCB or Thompson
   on `Surrogate`), the runs still in flight believed at their predicted top-1.
5. The pick: the best trained net that meets every target (with `--verify`, measured on the
   device first, and the next best where it is over).
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from nasctl.errors import NasctlError, UserError
from nasctl.guided.surrogate import Surrogate, acquisition
from nasctl.guided.trainer import Trained, Trainer
from nasctl.models.cost import cost_table
from nasctl.predict import Predictor
from nasctl.search.constraints import Constraint, build_constraints, reachable
from nasctl.space.base import FreeLayers
from nasctl.space.sample import sample
from nasctl.space.space import Arch, load_space
from nasctl.tables import OutputSet, read_table, to_json

ENUMERATE_MAX = 50_000  # spaces up to this size are searched exactly
POOL = 20_000  # else: this many uniform draws, extended by local search
MARGIN_STD, MARGIN_MAPE = 2.0, 2.0
RULES = ("ei", "ucb", "thompson")
# Device measurements that may fail per proposal before it settles for the archs the predictors'
# margin already clears: where a predictor reads low near the target, the archs within its margin
# were mostly over it, and the search measured one after another (1,048 measurements for 20
# trainings on HELP's Gold 6240 column at its 25th percentile, benchmarks/tabular.py nb201).
VERIFY_TRIES = 5
FILES = ("arch.json", "search.csv", "search.png", "trained.parquet", "verify.parquet")


@dataclass(frozen=True)
class GuidedJob:
    space: str = "proxyless"
    predictors: tuple[str, ...] = ()
    target_ms: tuple[float, ...] = ()  # the i-th to the i-th ms predictor; one value to every one
    target_mj: tuple[float, ...] = ()
    max_params: str | None = None
    max_mflops: str | None = None
    accuracy: str | None = None  # an accuracy predictor: pick from it, train nothing
    trainer: str | None = None  # None: nasctl retrain with data / epochs
    data: str = "digits"
    epochs: int = 30
    train_limit: int | None = None
    budget: int | None = None
    initial: int = 5
    jobs: int = 1
    rule: str = "ei"
    verify: str | None = None
    host: str | None = None
    verify_wait_s: float = 300.0
    seed: int = 0


@dataclass
class Target:
    """A constraint and the device it is for (its predictor's file stem)."""

    device: str
    c: Constraint
    mape: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.device}:{self.c.name}" if self.device else self.c.name

    def bounds(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted value and its upper bound (value plus margin) per arch."""
        mean, std = self.c.predictor.predict_indices(idx)
        mean = mean + self.c.offset
        if self.c.unit not in ("ms", "mJ"):  # params, MFLOPs: counted exactly
            return mean, mean
        upper = mean + np.maximum(MARGIN_STD * std, MARGIN_MAPE * self.mape * mean)
        return mean, np.where(mean > 0, upper, np.inf)  # a table extrapolated below zero says nothing


def targets(space, job: GuidedJob) -> list[Target]:
    """Each latency / energy predictor with its target, then any budgets; a target out of reach
    is refused here (`reachable`), before anything is trained."""
    out: list[Target] = []
    base = load_space(job.space)
    preds = [(Path(p).stem, Predictor.load(p)) for p in job.predictors]
    for unit, given, flag in (("ms", job.target_ms, "--target-ms"), ("mJ", job.target_mj, "--target-mj")):
        mine = [(name, p) for name, p in preds if p.meta.get("unit") == unit]
        if not given:
            continue
        if not mine:
            raise UserError(f"{flag} needs a --predictor of a metric in {unit}")
        if len(given) not in (1, len(mine)):
            raise UserError(f"{flag}: {len(given)} values for {len(mine)} {unit} predictors (give one for all, or one each, in order)")
        for (name, p), t in zip(mine, given * len(mine) if len(given) == 1 else given):
            p.check_space(base)
            c = Constraint(p.metric, p, float(t), unit, hard_max=True)
            lo, _ = reachable(space, c)
            if t < lo:
                raise UserError(f"{flag} {t:g}: no arch of the space is predicted under it on {name} (the least is {lo:.4g} {unit})")
            out.append(Target(name, c, float(p.meta.get("figures", {}).get("default", {}).get("mape") or 0.0)))
    unused = [name for name, p in preds if not {"ms": job.target_ms, "mJ": job.target_mj}.get(p.meta.get("unit"))]
    if unused:
        raise UserError(f"--predictor {', '.join(unused)}: no --target-ms / --target-mj for its unit")
    if job.max_params or job.max_mflops:
        deploy = preds[0][1].space() if preds else space
        out += [Target("", c) for c in build_constraints(deploy, [], max_params=job.max_params, max_mflops=job.max_mflops)]
    if not out:
        raise UserError("give a target: --target-ms / --target-mj with --predictor, or --max-params / --max-mflops")
    return out


class Pool:
    """The candidates and what is known of them: exact on small spaces, a draw on large ones."""

    def __init__(self, space, goals: list[Target], seed: int, verified: tuple[int, ...] = ()):
        """`verified`: the goals the --verify device measures (a measurement decides those)."""
        self.space, self.goals = space, goals
        self.verified = np.isin(np.arange(len(goals)), verified)
        size = int(space.describe()["size"])
        self.exact = isinstance(space, FreeLayers) and size <= ENUMERATE_MAX
        if self.exact:
            choices = [np.flatnonzero(row) for row in space.allowed]
            idx = np.array(list(itertools.product(*choices)), dtype=np.int64)
        else:
            idx = sample(space, min(POOL, size), seed)
        self.idx = np.empty((0, space.num_layers), dtype=np.int64)
        self.pred = self.upper = np.empty((0, len(goals)))
        self.measured = np.empty((0, len(goals)))  # the device's figure per (arch, verified goal); nan unmeasured
        self.keys: dict[bytes, int] = {}
        self.add(idx)

    def add(self, idx: np.ndarray) -> None:
        new = [i for i, row in enumerate(idx) if row.tobytes() not in self.keys]
        if not new:
            return
        idx = idx[new]
        pred, upper = zip(*(g.bounds(idx) for g in self.goals))
        start = len(self.idx)
        self.idx = np.concatenate([self.idx, idx])
        self.pred = np.concatenate([self.pred, np.stack(pred, 1)])
        self.upper = np.concatenate([self.upper, np.stack(upper, 1)])
        self.measured = np.concatenate([self.measured, np.full((len(idx), len(self.goals)), np.nan)])
        for k, row in enumerate(idx):
            self.keys[row.tobytes()] = start + k
        self.goal = np.array([g.c.target for g in self.goals])
        self.sure = (self.upper <= self.goal).all(1)

    def index(self, arch: Arch) -> int:
        key = np.asarray(arch.indices, dtype=np.int64).tobytes()
        if key not in self.keys:
            self.add(np.asarray(arch.indices, dtype=np.int64)[None])
        return self.keys[key]

    def feasible(self, open_: bool = True) -> np.ndarray:
        """Per arch: every goal met, a verified goal by its measurement where there is one, else
        (with `open_`) possibly: its mean within the margin of the target, on either side, so that
        a measurement can decide; an unverified goal by its predicted bound."""
        unknown = np.isnan(self.measured)
        could = (2 * self.pred - self.upper <= self.goal) if open_ else (self.upper <= self.goal)
        by_device = np.where(unknown, could, self.measured <= self.goal)
        return np.where(self.verified, by_device, self.upper <= self.goal).all(1)

    def unsure(self, i: int) -> bool:
        """Whether a measurement must decide arch i before it counts as meeting the targets."""
        return bool((self.verified & np.isnan(self.measured[i]) & (self.upper[i] > self.goal)).any())

    def neighbours(self, idx: np.ndarray) -> np.ndarray:
        """Every single-layer change of each arch, through the space's allowed ops."""
        out = []
        for row in idx:
            layer, op = np.nonzero(self.space.flips(row))
            cand = np.repeat(row[None], len(layer), 0)
            cand[np.arange(len(layer)), layer] = op
            out.append(cand)
        return np.concatenate(out) if out else idx[:0]


class Events:
    def __init__(self, result: Callable[[dict], None] = lambda row: None, note: Callable[[str], None] = lambda text: None):
        self.result, self.note = result, note


@dataclass
class State:
    rows: list[dict] = field(default_factory=list)  # search.csv: one per trainer result
    measurements: list[dict] = field(default_factory=list)  # each device measurement: arch, figures, met


def run(job: GuidedJob, out: Path, events: Events | None = None) -> dict:
    events = events or Events()
    t0 = time.perf_counter()
    if job.rule not in RULES:
        raise UserError(f"--acquisition must be one of {', '.join(RULES)}")
    base = load_space(job.space)  # the first predictor's deployment config is searched in (`targets` checks each)
    space = Predictor.load(job.predictors[0]).space() if job.predictors else base
    if not isinstance(space, FreeLayers):
        raise UserError(f"--method predictor searches layered and NB201 spaces; {space.name!r} is a cell space (use la-darts)")
    goals = targets(space, job)
    device, verified = _verify_device(job.verify, goals)
    acc = _accuracy(job, space)
    if acc is None:
        if job.budget is None:
            raise UserError("give --budget N (trainer runs in all) with --trainer, or an --accuracy predictor")
        if job.initial > job.budget:
            raise UserError(f"--budget {job.budget} is below the initial design of {job.initial} nets (--initial)")
        trainer = Trainer(job.trainer) if job.trainer else Trainer.retrain(job.space, job.data, job.epochs, job.train_limit)
    elif job.budget is not None or job.trainer:
        raise UserError("--accuracy picks from a predictor: --budget and --trainer are for training nets instead")
    pool = Pool(space, goals, job.seed, verified)
    if not pool.feasible().any():
        raise UserError("no arch of the space is predicted to meet every target with the predictors' margin"
                        + ("" if device else " (--verify DEVICE would measure the ones within it)"))
    out.mkdir(parents=True, exist_ok=True)
    state = State()
    verifier = _Verifier(device, job, goals, out, events, state) if device else None
    if verifier is not None:
        verifier.resume(pool)
    if acc is not None:
        pick = _pick_predicted(pool, acc, verifier)
        trained = None
    else:
        trained = Trained(out / "trained.parquet")
        if len(trained.frame):
            events.note(f"resuming: {len(trained.frame)} trainer runs already in {out / 'trained.parquet'}")
        _loop(job, space, pool, trainer, trained, out, verifier, state, events)
        pick = _pick_trained(pool, space, trained, verifier)
    return _write(out, job, space, goals, pool, pick, acc, trained, state, time.perf_counter() - t0)


def _verify_device(ref: str | None, goals: list[Target]):
    """The --verify device and the goals it measures: every latency / energy goal where they are
    one device's, else the named one's (`--verify pixel3=pixel3.toml`, a predictor's file stem)."""
    from nasctl.device import load_device

    if ref is None:
        return None, ()
    measurable = [k for k, g in enumerate(goals) if g.c.unit in ("ms", "mJ")]
    names = {goals[k].device for k in measurable}
    if not measurable:
        raise UserError("--verify measures latency or energy: give --target-ms or --target-mj with a --predictor")
    name, sep, path = ref.partition("=")
    if sep and name in names:
        return load_device(path), tuple(k for k in measurable if goals[k].device == name)
    if len(names) > 1:
        raise UserError(f"--verify: targets on several devices ({', '.join(sorted(names))}); name the one it measures, "
                        f"e.g. --verify {sorted(names)[0]}=PROFILE")
    return load_device(ref), tuple(measurable)


def _accuracy(job: GuidedJob, space) -> Predictor | None:
    if job.accuracy is None:
        return None
    acc = Predictor.load(job.accuracy)
    if acc.metric not in ("top1", "top5", "accuracy", "val_acc"):
        raise UserError(f"--accuracy: the predictor is of {acc.metric}, not of top-1 (fit-predictor --metric top1)")
    acc.check_space(space)
    return acc


class _Verifier:
    """Measures archs on the --verify device (its goals only), each once, when the predictors'
    margin cannot decide them; says whether an arch meets every target."""

    def __init__(self, device, job: GuidedJob, goals: list[Target], out: Path, events: Events, state: State):
        self.device, self.job, self.goals, self.out, self.events, self.state = device, job, goals, out, events, state

    def resume(self, pool: Pool) -> None:
        """The measurements of an earlier run of this search (verify.parquet): a rerun measures
        nothing twice."""
        path = self.out / "verify.parquet"
        if not path.exists():
            return
        rows = read_table(path)
        for arch, group in rows[rows["status"] == "ok"].groupby("arch", sort=False):
            i, last, figs = pool.index(pool.space.parse(arch)), group.iloc[-1], {}
            for k, g in enumerate(self.goals):
                col = {"ms": "latency_ms", "mJ": "energy_mj"}.get(g.c.unit)
                if pool.verified[k] and col in last and pd.notna(last[col]):
                    figs[g.label] = pool.measured[i, k] = float(last[col])
            self.state.measurements.append({"arch": arch, "measured": figs, "met": bool(pool.feasible(open_=False)[i])})

    def check(self, pool: Pool, i: int, always: bool = False) -> bool:
        """Whether arch i meets every target, measuring it first where the margin cannot say
        (or, `always`, wherever it is not measured yet: the pick)."""
        if pool.unsure(i) or (always and np.isnan(pool.measured[i, pool.verified]).any()):
            from nasctl.search.run import Job, _measure

            arch = pool.space.from_indices(pool.idx[i])
            figs = {}
            for k, g in enumerate(self.goals):
                if not pool.verified[k]:
                    continue
                deploy = g.c.predictor.space()
                row = _measure(deploy.parse(arch.string), self.device, self.out / "verify.parquet",
                               Job(host=self.job.host, verify_wait_s=self.job.verify_wait_s), self.events,
                               g.c.predictor.meta.get("drift_correct"))
                col = {"ms": "latency_ms", "mJ": "energy_mj"}[g.c.unit]
                if row.get(col) is None or pd.isna(row.get(col)):
                    raise NasctlError(f"verify on {self.device.name}: the device measured no {col}")
                figs[g.label] = pool.measured[i, k] = float(row[col])
            met = bool(pool.feasible(open_=False)[i])
            self.state.measurements.append({"arch": arch.string, "measured": figs, "met": bool(met)})
            self.events.note(f"verify {arch.id} on {self.device.name}: " + ", ".join(f"{k} {v:.4g}" for k, v in figs.items())
                             + (" meets every target" if met else " is over a target: not trained, not picked"))
        return bool(pool.feasible(open_=False)[i])


def _design(pool: Pool, n: int, seed: int) -> list[int]:
    """`n` feasible candidates, one from each MACs quantile stratum (seeded within it)."""
    cand = np.flatnonzero(pool.feasible())
    macs = cost_table(pool.space).of(pool.idx[cand])[0]
    order = cand[np.argsort(macs, kind="stable")]
    rng = np.random.default_rng(seed)
    return [int(part[rng.integers(len(part))]) for part in np.array_split(order, min(n, len(order))) if len(part)]


def _loop(job: GuidedJob, space, pool: Pool, trainer: Trainer, trained: Trained, out: Path, verifier, state: State,
          events: Events) -> None:
    surrogate = Surrogate(space, job.seed)
    rng = np.random.default_rng(job.seed)
    done = {a: pool.index(space.parse(a)) for a in trained.frame["arch"]}  # arch -> its pool row
    design = _design(pool, job.initial, job.seed)
    pending: dict = {}
    slots = list(range(job.jobs))
    used = len(trained.frame)
    best = trained.ok()["top1"].max() if len(trained.ok()) else -np.inf

    def taken() -> set[int]:
        return set(done.values()) | {i for i, _ in pending.values()}

    def propose() -> tuple[int, dict] | None:
        busy = taken()
        while design:  # the initial design first, in its order
            i = design.pop(0)
            if i not in busy and (not pool.unsure(i) or verifier.check(pool, i)):
                return i, {"phase": "design"}
        ok = trained.ok()
        if len(ok) < 2:  # no model yet (the design was short, or its runs failed): a uniform feasible draw
            cand = np.setdiff1d(np.flatnonzero(pool.feasible()), list(busy))
            for i in rng.permutation(cand)[:VERIFY_TRIES]:
                if not pool.unsure(int(i)) or verifier.check(pool, int(i)):
                    return int(i), {"phase": "design"}
            return None
        X = pool.idx[[done[a] for a in ok["arch"]]]
        surrogate.fit(X, ok["top1"].to_numpy(float))
        if pending:
            guess, _ = surrogate.predict(pool.idx[[i for i, _ in pending.values()]])
            surrogate.fit(np.concatenate([X, pool.idx[[i for i, _ in pending.values()]]]),
                          np.concatenate([ok["top1"].to_numpy(float), guess]), believe=True)
        misses = 0
        while True:
            if not pool.exact:
                _local_search(pool, lambda idx: acquisition(job.rule, *surrogate.predict(idx), best, rng))
            cand = np.flatnonzero(pool.feasible(open_=misses < VERIFY_TRIES))
            cand = np.setdiff1d(cand, list(busy))
            if not len(cand):
                return None
            mean, std = surrogate.predict(pool.idx[cand])
            score = acquisition(job.rule, mean, std, best, rng)
            k = int(np.argmax(score))
            i = int(cand[k])
            if pool.unsure(i) and not verifier.check(pool, i):
                busy.add(i)
                misses += 1
                continue
            return i, {"phase": job.rule, "predicted_top1": float(mean[k]), "predicted_std": float(std[k]), "score": float(score[k])}

    with ThreadPoolExecutor(job.jobs) as workers:
        while True:
            while slots and used + len(pending) < job.budget:
                got = propose()
                if got is None:
                    break
                i, info = got
                arch = space.from_indices(pool.idx[i])
                slot = slots.pop(0)
                pending[workers.submit(trainer.run, arch, out / "trainings" / arch.id, slot)] = (i, info)
                events.note(f"training {arch.id} ({info['phase']}) in slot {slot}")
            if not pending:
                break
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                i, info = pending.pop(f)
                row = f.result()
                trained.put(row)
                done[row["arch"]] = i
                used += 1
                slots.append(row["slot"])
                if row["status"] == "ok":
                    best = max(best, row["top1"])
                state.rows.append({"n": used, **{k: row[k] for k in ("arch_id", "arch", "status", "top1", "wall_s")},
                                   **info, "best_top1": best if np.isfinite(best) else None, "error": row["error"]})
                events.result(state.rows[-1])
            if not design and not pending and not len(trained.ok()):
                last = trained.frame["error"].dropna()
                raise NasctlError(f"every trainer run failed ({len(trained.frame)} of {len(trained.frame)}; the rows are in "
                                  f"{trained.path}): {last.iloc[-1] if len(last) else 'no error text'}")


def _local_search(pool: Pool, score: Callable[[np.ndarray], np.ndarray], rounds: int = 3, top: int = 20) -> None:
    """Large spaces: grow the pool around the archs `score` (the acquisition, or a predicted
    top-1) likes best, by single-layer changes, a few rounds (a local search over predictions)."""
    for _ in range(rounds):
        cand = np.flatnonzero(pool.feasible())
        lead = cand[np.argsort(-score(pool.idx[cand]))[:top]]
        before = len(pool.idx)
        pool.add(pool.neighbours(pool.idx[lead]))
        if len(pool.idx) == before:
            return


def _pick_trained(pool: Pool, space, trained: Trained, verifier) -> dict | None:
    """The best trained net that meets every target (verified, with a device)."""
    ok = trained.ok().sort_values("top1", ascending=False, kind="stable")
    for a, top1 in zip(ok["arch"], ok["top1"]):
        i = pool.index(space.parse(a))
        if verifier.check(pool, i, always=True) if verifier is not None else pool.feasible(open_=False)[i]:
            return {"i": i, "top1": float(top1)}
    return None


def _pick_predicted(pool: Pool, acc: Predictor, verifier, tries: int = 20) -> dict | None:
    """The feasible arch of the highest predicted top-1 (verified down the list, with a device)."""
    if not pool.exact:
        _local_search(pool, lambda idx: acc.predict_indices(idx)[0])
    cand = np.flatnonzero(pool.feasible())
    mean, _ = acc.predict_indices(pool.idx[cand])
    for k in np.argsort(-mean, kind="stable")[:tries]:
        i = int(cand[k])
        if verifier.check(pool, i, always=True) if verifier is not None else not pool.unsure(i):
            return {"i": i, "top1": None}
    return None


def _write(out: Path, job: GuidedJob, space, goals: list[Target], pool: Pool, pick: dict | None, acc, trained,
           state: State, wall_s: float) -> dict:
    from nasctl.guided.plot import guided_png
    from nasctl.models.cost import arch_cost

    doc: dict = {"method": "predictor", "space": space.source, "params": space.params.__dict__, "job": asdict(job),
                 "candidates": len(pool.idx), "exact": pool.exact, "trained": 0 if trained is None else len(trained.frame),
                 "trained_ok": 0 if trained is None else len(trained.ok()), "device_measurements": len(state.measurements),
                 "verify": state.measurements, "wall_s": wall_s}
    model = None  # what the pick and the plot are predicted by: the given predictor, else a fit on every trained net
    if acc is not None:
        model = lambda idx: acc.predict_indices(idx)[0]  # noqa: E731
    elif len(trained.ok()) >= 2:
        ok = trained.ok()
        fitted = Surrogate(space, job.seed).fit(pool.idx[[pool.index(space.parse(a)) for a in ok["arch"]]], ok["top1"].to_numpy(float))
        model = lambda idx: fitted.predict(idx)[0]  # noqa: E731
    if pick is not None:
        i = pick["i"]
        arch = space.from_indices(pool.idx[i])
        macs, params = arch_cost(arch)
        predicted = float(model(pool.idx[[i]])[0]) if model is not None else None
        verified = next((m for m in state.measurements if m["arch"] == arch.string), None)
        seen = verified["measured"] if verified else {}
        doc.update(arch=arch.string, arch_id=arch.id, macs=macs, params_count=params, top1_predicted=predicted,
                   top1_measured=pick["top1"], verify_status="verified" if verified else "none",
                   targets=[{"device": g.device, "metric": g.c.name, "unit": g.c.unit, "target": g.c.target, "kind": "max",
                             "predicted": float(pool.pred[i, k]), "bound": float(pool.upper[i, k]),
                             "margin": float(pool.upper[i, k] - pool.pred[i, k]),
                             "measured": seen.get(g.label), "met": bool(seen.get(g.label, pool.upper[i, k]) <= g.c.target)}
                            for k, g in enumerate(goals)])
    else:
        doc.update(arch=None, verify_status="none", targets=[{"device": g.device, "metric": g.c.name, "unit": g.c.unit,
                                                                "target": g.c.target, "kind": "max"} for g in goals])
    with OutputSet() as files:
        files.write(out / "arch.json", to_json(doc, indent=2).encode())
        files.write_table(pd.DataFrame(state.rows), out / "search.csv")
        files.write(out / "search.png", guided_png(space, goals, pool, pick, trained, model, job.seed))
    return doc
