"""Train a found architecture from scratch with the LightNAS/FBNet recipe; resumable, DDP-ready.

Resuming is exact: the data order comes from a DistributedSampler seeded by (seed, epoch), and
the checkpoint written after every epoch holds the model, optimizer, scheduler, EMA, AMP scaler
and the torch RNG state (dropout). On CPU a resumed run matches an uninterrupted one digit for
digit. Under `torchrun` each process trains its shard (gloo on CPU, NCCL on GPU) and only
rank 0 writes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler

from nasctl.data import Data
from nasctl.errors import UserError
from nasctl.models import build
from nasctl.space.space import Arch
from nasctl.tables import OutputSet, to_json
from nasctl.train.loop import distributed, layout, lr_factor, param_groups, torch_bytes

RUN_FILES = ("run.json", "checkpoint.pt", "metrics.csv", "model.pt", "arch.json")  # what a run folder receives


@dataclass(frozen=True)
class Recipe:
    epochs: int = 30
    batch: int = 64  # per process
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 4e-5  # not on BN weights or biases
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    dropout: float = 0.2
    ema: float = 0.0  # EMA decay of the weights; 0 = off
    amp: bool = True  # used only on CUDA
    seed: int = 0
    eval_every: int = 1  # epochs between top-1 evaluations (and always the last): a 10k test set costs a small epoch's time

    def __post_init__(self):
        for name, v in asdict(self).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not 0 <= v < math.inf:
                raise UserError(f"--{name.replace('_', '-')} must be a finite number >= 0, not {v}")
        if self.epochs < 1 or self.batch < 2 or self.eval_every < 1:
            raise UserError("--epochs and --eval-every must be >= 1, and --batch >= 2")


@dataclass
class Run:
    """Everything a training run needs; its folder's run.json can rebuild it for --resume."""

    arch: Arch
    data: Data
    recipe: Recipe
    out: Path
    resume: bool
    init: dict | None = None  # starting weights (a supernet's inherited subnet); None = a fresh init
    record: dict | None = None  # run.json of a new run, written with its first checkpoint


def new_run(arch_ref: str, data_spec: str, out: Path, recipe: Recipe, space: str | None = None, macro: str | None = None,
            train_limit: int | None = None, width_mult: float | None = None,
            init: Callable[[Arch], dict] | None = None, init_from: str | None = None) -> Run:
    """Resolve the arch for the data (classes, resolution; the `cifar` macro for small images)
    and the run's record, which `retrain` writes as out/run.json with the first checkpoint (a
    run that never checkpointed leaves no folder to resume). `init(arch)`: starting weights
    instead of a fresh init (`ofa.score.inherited_init`: a fine-tune), named `init_from` there."""
    from nasctl.data import load_data
    from nasctl.space.archfile import read_arch_ref

    data = load_data(data_spec, train_limit=train_limit)
    arch = read_arch_ref(arch_ref, space, resolution=data.resolution, num_classes=data.num_classes, macro=macro, width_mult=width_mult)
    if macro is None and data.resolution <= 64 and "cifar" in arch.space.macros:
        arch = arch.space.with_params(macro="cifar", resolution=data.resolution, num_classes=data.num_classes).parse(arch.string)  # small images: fewer stride-2 steps
    weights = init(arch) if init is not None else None
    doc = {"arch": arch.string, "space": arch.space.source, "macro": arch.space.params.macro,
           "width_mult": arch.space.params.width_mult, "data": data_spec, "train_limit": train_limit, "recipe": asdict(recipe),
           "init_from": init_from}
    return Run(arch, data, recipe, out, resume=False, init=weights, record=doc)


def resume_run(out: Path) -> Run:
    """The run recorded in `out`, to continue from its last checkpoint."""
    if not (out / "checkpoint.pt").is_file() or not (out / "run.json").is_file():
        raise UserError(f"{out}: no checkpoint.pt and run.json to resume from")
    from nasctl.data import load_data
    from nasctl.space.archfile import read_arch_ref

    try:
        doc = json.loads((out / "run.json").read_text())
        spec, arch_text, space, macro = (str(doc[k]) for k in ("data", "arch", "space", "macro"))
        recipe = Recipe(**doc["recipe"])
        limit, width = doc.get("train_limit"), float(doc.get("width_mult", 1.0))
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            raise TypeError(f"train_limit {limit!r} is not a whole number")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{out / 'run.json'}: not a run record of nasctl retrain ({type(e).__name__}: {e})") from None
    try:  # read now, so a damaged checkpoint is said before the run starts (retrain reads it again)
        ck = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
        missing = {"model", "optimizer", "scheduler", "scaler", "rng", "epoch", "metrics"} - set(ck)
    except Exception as e:  # truncated or foreign: all the same to the user
        raise UserError(f"{out / 'checkpoint.pt'}: cannot resume from it ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    if missing:
        raise UserError(f"{out / 'checkpoint.pt'}: cannot resume from it (no {', '.join(sorted(missing))})")
    data = load_data(spec, train_limit=limit)
    arch = read_arch_ref(arch_text, space, resolution=data.resolution, num_classes=data.num_classes, macro=macro, width_mult=width)
    return Run(arch, data, recipe, out, resume=True)


def evaluate(model: nn.Module, data, device, batch: int) -> dict:
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    n = loss = top1 = top5 = 0.0
    with torch.no_grad():
        for x, y in DataLoader(data, batch_size=max(256, batch)):
            x, y = x.to(device, memory_format=layout(device)), y.to(device)
            out = model(x)
            loss += float(loss_fn(out, y))
            k = min(5, out.shape[1])
            pred = out.topk(k, 1).indices
            top1 += float((pred[:, 0] == y).sum())
            top5 += float((pred == y[:, None]).any(1).sum())
            n += len(y)
    return {"val_loss": loss / n, "top1": top1 / n, "top5": top5 / n}


def arch_doc(arch: Arch) -> dict:
    """What `export` (and a later retrain) needs to rebuild the network."""
    p = arch.space.params
    return {"arch": arch.string, "arch_id": arch.id, "space": arch.space.source, "params": p.__dict__}


def retrain(
    arch: Arch,
    data: Data,
    recipe: Recipe,
    out: Path,
    resume: bool = False,
    on_epoch: Callable[[dict], None] = lambda row: None,
    init: dict | None = None,
    record: dict | None = None,
) -> dict:
    """Train; after each epoch write checkpoint.pt and metrics.csv as one set (rank 0; the first
    set also holds `record` as run.json), at the end model.pt and arch.json as one set. `init`:
    starting weights instead of a fresh init (a resume takes the checkpoint's)."""
    rank, world, device = distributed()
    ckpt_path = out / "checkpoint.pt"
    torch.manual_seed(recipe.seed)
    model = build(arch, recipe.dropout)
    if init is not None:
        model.load_state_dict(init)
    model = model.to(device, memory_format=layout(device))
    ddp = DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.SGD(param_groups(model, recipe.weight_decay), lr=recipe.lr, momentum=recipe.momentum, nesterov=True)
    sampler = DistributedSampler(data.train, num_replicas=world, rank=rank, shuffle=True, seed=recipe.seed, drop_last=True)
    loader = DataLoader(data.train, batch_size=recipe.batch, sampler=sampler, drop_last=True)
    steps = len(loader)
    if steps == 0:
        raise UserError(f"--batch {recipe.batch} x {world} processes is larger than the {len(data.train)} training images")
    warmup, total = round(recipe.warmup_epochs * steps), recipe.epochs * steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, total))
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema), use_buffers=True) if recipe.ema > 0 else None
    amp = recipe.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    rows: list[dict] = []
    start = 0
    if resume:
        if not ckpt_path.exists():
            raise UserError(f"{out}: no checkpoint.pt to resume from")
        try:
            ck = torch.load(ckpt_path, map_location=device, weights_only=True)
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            scaler.load_state_dict(ck["scaler"])
            if ema is not None:
                ema.load_state_dict(ck["ema"])
            torch.set_rng_state(ck["rng"])
            if device.type == "cuda" and "cuda_rng" in ck:
                torch.cuda.set_rng_state(ck["cuda_rng"], device)
            start, rows = int(ck["epoch"]), json.loads(ck["metrics"])
        except Exception as e:  # truncated, foreign or of another arch: all the same to the user
            raise UserError(f"{ckpt_path}: cannot resume from it ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None

    for epoch in range(start, recipe.epochs):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        ddp.train()
        loss_sum = torch.zeros(2, device=device)
        for x, y in loader:
            x, y = x.to(device, non_blocking=True, memory_format=layout(device)), y.to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=amp):
                loss = loss_fn(ddp(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            loss_sum += torch.stack([loss.detach().float() * len(y), torch.tensor(float(len(y)), device=device)])
        if world > 1:
            dist.all_reduce(loss_sum)
        evaluated = ema.module if ema is not None else model
        scored = (epoch + 1) % recipe.eval_every == 0 or epoch + 1 == recipe.epochs
        row = {"epoch": epoch + 1, "train_loss": float(loss_sum[0] / loss_sum[1]),
               **(evaluate(evaluated, data.val, device, recipe.batch) if scored else dict.fromkeys(("val_loss", "top1", "top5"), math.nan)),
               "lr": opt.param_groups[0]["lr"], "time_s": time.perf_counter() - t0}
        rows.append(row)
        if not math.isfinite(row["train_loss"]):  # a diverged run never ends in a model.pt
            raise UserError(f"training diverged: the loss is {row['train_loss']} in epoch {epoch + 1} (lower --lr?); "
                            "no model.pt written" + (f"; {ckpt_path} holds epoch {epoch}" if epoch else ""))
        if rank == 0:
            ck = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                  "scaler": scaler.state_dict(), "rng": torch.get_rng_state(), "epoch": epoch + 1,
                  "metrics": json.dumps(rows)}
            if ema is not None:
                ck["ema"] = ema.state_dict()
            if device.type == "cuda":
                ck["cuda_rng"] = torch.cuda.get_rng_state(device)
            with OutputSet() as files:
                if record is not None and epoch == start:
                    files.write(out / "run.json", to_json(record, indent=2).encode())
                files.write(ckpt_path, torch_bytes(ck))
                files.write_table(pd.DataFrame(rows), out / "metrics.csv")
        on_epoch(row)

    final = (ema.module if ema is not None else model).state_dict()
    if rank == 0:
        with OutputSet() as files:
            files.write(out / "model.pt", torch_bytes({"model": final, "arch": to_json(arch_doc(arch))}))
            files.write(out / "arch.json", to_json({**arch_doc(arch), "recipe": asdict(recipe), "data": data.name}, indent=2).encode())
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return {"output": str(out), "data": data.name, "epochs": recipe.epochs, "resumed_from": start, "world_size": world,
            "device": str(device), **(rows[-1] if rows else {})}
