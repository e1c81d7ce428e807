"""Train the elastic supernet once, by progressive shrinking; resumable, DDP-ready.

Phases run in OFA's order (`elastic.PHASES`): the full net alone, then elastic kernel, depth and
expansion, each from the last phase's weights with a fresh cosine schedule. In the shrinking
phases every step trains a sandwich (the largest subnet, the phase's smallest and `random`
subnets drawn from the phase), all on one batch: the largest on the labels, the others on the
largest's soft predictions (in-place distillation, BigNAS/OFA), with the gradients summed into
one SGD step (bf16 autocast on CUDA). Before elastic expansion each layer's middle channels are sorted by importance.
Each batch is resized to one resolution drawn from `resolutions`.

A held-out slice of the training data (never the test set) is kept apart for scoring inherited
subnets (`evaluate`), so the accuracy predictor learns from data the supernet never saw.

Resuming is exact: the subnets and resolutions of a step come from a generator seeded by
(seed, phase, epoch, step), the data order from a DistributedSampler seeded by (seed, epoch),
and the checkpoint after every epoch holds the weights, the optimizer and the torch RNG state.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from nasctl.data import Data
from nasctl.errors import UserError
from nasctl.ofa.elastic import PHASES, Elastic, new_supernet
from nasctl.search.supernet import SuperNet, path_gates
from nasctl.space.space import SearchSpace
from nasctl.tables import OutputSet, atomic_write, to_json
from nasctl.train.loop import distributed, layout, lr_factor, param_groups, save, torch_bytes

FILES = ("supernet.json", "checkpoint.pt", "metrics.csv", "supernet.pt")


@dataclass(frozen=True)
class Shrink:
    """The progressive-shrinking recipe. `epochs` per phase, in `PHASES` order."""

    epochs: tuple[int, ...] = (4, 2, 2, 2)
    batch: int = 64
    lr: float = 0.05  # the full net's peak lr
    shrink_lr: float = 0.02  # the shrinking phases' (OFA: a few times lower than the full net's)
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    random: int = 2  # random subnets per step besides the largest and the smallest
    resolutions: tuple[int, ...] = field(default_factory=tuple)  # () = the space's resolution only
    holdout: int = 2000  # training images kept apart for scoring subnets
    seed: int = 0
    naive: bool = False  # the ablation: every epoch draws from the whole space (no phases), at the full net's lr

    def __post_init__(self):
        if len(self.epochs) != len(PHASES) or any(e < 0 for e in self.epochs) or self.epochs[0] < 1:
            raise UserError(f"--epochs takes {len(PHASES)} counts ({', '.join(PHASES)}), the first at least 1")
        if self.batch < 2 or self.random < 0 or self.holdout < 1 or not 0 < self.lr < math.inf or not 0 < self.shrink_lr < math.inf:
            raise UserError("--batch must be >= 2, --random >= 0, --holdout >= 1 and the learning rates > 0")
        if any(r < 8 for r in self.resolutions):
            raise UserError(f"--resolutions must be 8 px or more, not {', '.join(map(str, self.resolutions))}")

    def steps(self) -> list[tuple[str, int]]:
        """(phase, epoch within it) for every epoch of the schedule."""
        if self.naive:
            return [(PHASES[-1], e) for e in range(sum(self.epochs))]
        return [(p, e) for p, n in zip(PHASES, self.epochs) for e in range(n)]


def holdout_split(data: Data, shrink: Shrink) -> tuple[Subset, Subset]:
    """(train, held out): a seeded split of the training images."""
    if shrink.holdout >= len(data.train):
        raise UserError(f"--holdout {shrink.holdout} leaves nothing of the {len(data.train)} training images to train on")
    perm = np.random.default_rng(shrink.seed).permutation(len(data.train)).tolist()
    return Subset(data.train, perm[shrink.holdout:]), Subset(data.train, perm[:shrink.holdout])


def _sandwich(elastic: Elastic, phase: str, n_random: int, gen: torch.Generator) -> list[np.ndarray]:
    if phase == "full":
        return [elastic.largest()]
    return [elastic.largest(), elastic.smallest(phase)] + [elastic.draw(phase, gen) for _ in range(n_random)]


def train_supernet(space: SearchSpace, data: Data, shrink: Shrink, out: Path, resume: bool = False,
                   on_step: Callable[[dict], None] = lambda row: None) -> dict:
    """Train; after each epoch write checkpoint.pt and metrics.csv (rank 0), at the end supernet.pt."""
    rank, world, device = distributed()
    torch.manual_seed(shrink.seed)
    net, elastic = new_supernet(space)
    net = net.to(device, memory_format=layout(device))
    ddp = DistributedDataParallel(net, find_unused_parameters=True) if world > 1 else net
    train, _ = holdout_split(data, shrink)
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=shrink.seed, drop_last=True)
    loader = DataLoader(train, batch_size=shrink.batch, sampler=sampler, drop_last=True)
    if len(loader) == 0:
        raise UserError(f"--batch {shrink.batch} x {world} processes is larger than the {len(train)} training images")
    schedule, ckpt_path, rows, start = shrink.steps(), out / "checkpoint.pt", [], 0
    opt = None
    if resume:
        try:
            ck = torch.load(ckpt_path, map_location=device, weights_only=True)
            net.load_state_dict(ck["model"])
            start, rows = int(ck["epoch"]), json.loads(ck["metrics"])
            torch.set_rng_state(ck["rng"])
        except Exception as e:  # truncated, foreign or of another space: all the same to the user
            raise UserError(f"{ckpt_path}: cannot resume from it ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    resolutions = shrink.resolutions or (space.params.resolution,)
    amp = device.type == "cuda" and torch.cuda.is_bf16_supported()  # bf16: no loss scaling needed
    t_start = time.perf_counter()
    for n, (phase, epoch) in enumerate(schedule):
        if n < start:
            continue
        lr = shrink.lr if phase == "full" or shrink.naive else shrink.shrink_lr
        if opt is None or epoch == 0:
            if epoch == 0 and phase == "expand" and not shrink.naive:
                for layer in net.layers:
                    layer.superkernel.sort_channels()
            opt = torch.optim.SGD(param_groups(net, shrink.weight_decay), lr=lr, momentum=shrink.momentum, nesterov=True)
            if resume and n == start and epoch > 0:
                opt.load_state_dict(ck["optimizer"])
        total = sum(p == phase for p, _ in schedule) * len(loader)
        sampler.set_epoch(n)
        ddp.train()
        sums, t0 = torch.zeros(3, device=device), time.perf_counter()
        for s, (x, y) in enumerate(loader):
            step = epoch * len(loader) + s
            for g in opt.param_groups:
                g["lr"] = lr * lr_factor(step, 0, total)
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence([shrink.seed, n, s]).generate_state(1)[0]))
            r = resolutions[int(torch.randint(len(resolutions), (), generator=gen))]
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if r != x.shape[-1]:
                x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
            x = x.contiguous(memory_format=layout(device))
            opt.zero_grad(set_to_none=True)
            teacher, subnets = None, _sandwich(elastic, phase, shrink.random, gen)
            for idx in subnets:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = ddp(x, path_gates(space, idx, device)).float()
                if teacher is None:
                    loss = F.cross_entropy(logits, y, label_smoothing=shrink.label_smoothing)
                    teacher = logits.detach().softmax(1)
                    sums[0] += loss.detach() * len(y)
                else:
                    loss = F.cross_entropy(logits, teacher)  # soft targets: in-place distillation
                    sums[1] += loss.detach() * len(y) / (len(subnets) - 1)
                loss.backward()
            opt.step()
            sums[2] += len(y)
            on_step({"phase": phase, "epoch": n + 1, "step": s + 1, "steps": len(loader)})
        if world > 1:
            dist.all_reduce(sums)
        row = {"epoch": n + 1, "phase": phase, "largest_loss": float(sums[0] / sums[2]),
               "distill_loss": float(sums[1] / sums[2]) if phase != "full" else math.nan, "lr": lr, "time_s": time.perf_counter() - t0}
        if not math.isfinite(row["largest_loss"]):
            raise UserError(f"training diverged: the loss is {row['largest_loss']} in epoch {n + 1} (lower --lr?); "
                            "no supernet.pt written" + (f"; {ckpt_path} holds epoch {n}" if n else ""))
        rows.append(row)
        if rank == 0:
            with OutputSet() as files:  # the checkpoint and its metrics agree, always
                files.write(ckpt_path, torch_bytes({"model": net.state_dict(), "optimizer": opt.state_dict(),
                                                    "rng": torch.get_rng_state(), "epoch": n + 1, "metrics": json.dumps(rows)}))
                files.write_table(pd.DataFrame(rows), out / "metrics.csv")
    if rank == 0:
        save({"model": net.state_dict(), "definition": space.definition_hash}, out / "supernet.pt")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return {"output": str(out), "data": data.name, "epochs": len(schedule), "resumed_from": start, "world_size": world,
            "device": str(device), "wall_s": round(time.perf_counter() - t_start, 1), **(rows[-1] if rows else {})}


def record(space: SearchSpace, data_spec: str, train_limit: int | None, shrink: Shrink, out: Path) -> None:
    """out/supernet.json: what `--resume` and every later command rebuild the supernet from."""
    doc = {"space": space.source, "params": space.params.__dict__, "definition_hash": space.definition_hash,
           "data": data_spec, "train_limit": train_limit, "shrink": asdict(shrink)}
    atomic_write(out / "supernet.json", to_json(doc, indent=2).encode())


def read_record(path: Path) -> tuple[SearchSpace, dict, Shrink]:
    """The space, the record and the recipe of a supernet folder."""
    from nasctl.space.space import load_space

    try:
        doc = json.loads((path / "supernet.json").read_text())
        shrink = Shrink(**{k: tuple(v) if isinstance(v, list) else v for k, v in doc["shrink"].items()})
        space = load_space(doc["space"], **doc["params"])
    except FileNotFoundError:
        raise UserError(f"{path}: not a supernet folder (no supernet.json; make one with `nasctl supernet train`)") from None
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{path / 'supernet.json'}: not a supernet record ({type(e).__name__}: {e})") from None
    if space.definition_hash != doc.get("definition_hash"):
        raise UserError(f"{path / 'supernet.json'}: {doc['space']} no longer has the definition the supernet was trained on")
    return space, doc, shrink


@dataclass
class Trained:
    """A trained supernet folder: its net (eval mode), elastic sets, record and recipe."""

    path: Path
    net: SuperNet
    elastic: Elastic
    doc: dict
    shrink: Shrink

    def splits(self) -> tuple[Subset, Subset]:
        """(train, held out) of the data it was trained on."""
        from nasctl.data import load_data

        return holdout_split(load_data(self.doc["data"], train_limit=self.doc["train_limit"]), self.shrink)


def load_supernet(path: Path, space: SearchSpace | None = None) -> Trained:
    """A trained supernet folder; `space`, if given, must be the definition it was trained on."""
    sp, doc, shrink = read_record(path)
    if space is not None and space.definition_hash != sp.definition_hash:
        raise UserError(f"{path}: the supernet is of another space definition ({sp.name} {sp.definition_hash[:12]}) "
                        f"than {space.name} {space.definition_hash[:12]}")
    net, elastic = new_supernet(sp)
    try:
        ck = torch.load(path / "supernet.pt", map_location="cpu", weights_only=True)
        if ck.get("definition") != sp.definition_hash:
            raise ValueError("trained on another space definition than supernet.json records")
        net.load_state_dict(ck["model"])
    except FileNotFoundError:
        raise UserError(f"{path}: training has not finished (no supernet.pt; continue with `nasctl supernet train --resume {path}`)") from None
    except Exception as e:
        raise UserError(f"{path / 'supernet.pt'}: cannot read it ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return Trained(path, net.eval(), elastic, doc, shrink)
