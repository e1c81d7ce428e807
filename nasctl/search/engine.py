"""The gradient search: bi-level optimisation of a supernet's weights w and its α, with the cost
terms of the chosen method, and the measure-and-calibrate loop that closes it on a device.

Methods differ only in how α becomes gates and in the cost term (`METHODS`):

- lightnas: hard Gumbel one-hot, single path, straight-through; CE + Σ λ_c (c(α)/T_c - 1) with
  every λ_c learned by dual ascent, so one search lands on the targets.
- fbnet: soft Gumbel weights over all paths; CE + λ Σ log c(α) with a fixed λ.
- proxyless: binarized path sampling; CE + λ Σ E[c]/T_c with E[c] = c(softmax(α)), which is
  Σ p·LUT exactly when the predictor is the lookup table; fixed λ.
- singlepath (`singlepath.py`): no α; thresholds on the superkernels' weight norms decide each
  layer, weights and thresholds learn together (one level); learned λ, or λ log c with --lambda.

w trains on one half of the training data, α and λ on the other, alternating step by step; α is
frozen for the first `warmup_epochs`. Under torchrun every rank draws the same gates (a shared
seeded generator), w is DDP and α's gradient is averaged, so the ranks stay one search.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from nasctl.data import Data
from nasctl.errors import UserError
from nasctl.search import ALL_METHODS
from nasctl.search.constraints import Constraint
from nasctl.search.supernet import SuperNet, binarized, gumbel_hard, gumbel_soft, masked, probabilities
from nasctl.space.space import Arch, SearchSpace
from nasctl.train.loop import distributed, layout, lr_factor, param_groups


@dataclass(frozen=True)
class SearchConfig:
    """Defaults follow LightNAS where they can. What had to change to converge on small data
    (a CPU search on digits has ~300 α steps, the paper ~180k), each measured on digits:

    - α: Adam 0.05 (paper 1e-3) and η_λ = 0.05 (paper 5e-4): at the paper's rates α and λ barely
      move in 300 steps. w: SGD 0.05 cosine (paper 0.1, which diverges on a fresh supernet here).
    - τ divides α before sampling (see `gumbel_hard`), so late samples are the returned arch.
    - rho: an augmented-Lagrangian term (rho/2)(LAT/T - 1)^2 beside λ(LAT/T - 1). With λ alone
      (an integrator) the argmax latency swung 3-9 ms around an 8 ms target; the quadratic term
      damps it. rho = 0 is the paper's objective.
    - the supernet shares weights between a layer's ops (`SuperKernel`).
    """

    method: str = "lightnas"
    epochs: int = 30
    warmup_epochs: int = 3  # the paper's 10 of 90
    batch: int = 64
    w_lr: float = 0.05
    w_momentum: float = 0.9
    w_weight_decay: float = 4e-5
    alpha_lr: float = 0.05
    alpha_weight_decay: float = 1e-3
    lambda_lr: float = 0.05
    rho: float = 4.0  # augmented-Lagrangian damping; 0 is the paper's objective
    fixed_lambda: float | None = None  # fbnet / proxyless (default 0.2); singlepath: None = learned
    tau0: float = 5.0
    tau_min: float = 0.2
    amp: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.method not in ALL_METHODS:
            raise UserError(f"unknown method {self.method!r} (one of: {', '.join(ALL_METHODS)})")
        if self.epochs < 1 or not 0 <= self.warmup_epochs < self.epochs:
            raise UserError("--epochs must be >= 1 and 0 <= --warmup-epochs < --epochs")
        if self.batch < 2:
            raise UserError("--batch must be >= 2")
        if min(self.w_lr, self.alpha_lr, self.lambda_lr, self.fixed_lambda or 0) < 0 or not 0 < self.tau_min <= self.tau0:
            raise UserError("learning rates and λ must not be negative, and 0 < --tau-min <= --tau0")

    @property
    def learned_lambda(self) -> bool:
        """Whether λ is learned by dual ascent (one search to the target) or fixed by the user."""
        return self.method == "lightnas" or (self.method in ("singlepath", "la-darts") and self.fixed_lambda is None)

    @property
    def lam(self) -> float:
        """The fixed λ of the methods that take one."""
        return 0.2 if self.fixed_lambda is None else self.fixed_lambda

    def progress(self, epoch: float) -> float:
        """0 at the first α step, 1 at the end of the planned epochs (and after: calibration)."""
        return min(1.0, max(0.0, (epoch - self.warmup_epochs) / max(1e-9, self.epochs - self.warmup_epochs)))

    def tau(self, epoch: float) -> float:
        """Exponential decay from tau0 at the first α step to tau_min at the end."""
        return self.tau0 * (self.tau_min / self.tau0) ** self.progress(epoch)

    def alpha_lr_at(self, epoch: float) -> float:
        """Cosine from alpha_lr down to 0.3 alpha_lr: late argmax flips settle, and a calibration
        round moves α from where it is instead of swinging it (measured: ±5% swings at a
        constant rate after a residual shift)."""
        return self.alpha_lr * (0.3 + 0.35 * (1 + math.cos(math.pi * self.progress(epoch))))


def split(data: Data, seed: int) -> tuple[Subset, Subset]:
    """The bi-level halves of the training data: w learns on one, α and λ on the other."""
    perm = np.random.default_rng(seed).permutation(len(data.train)).tolist()
    half = len(perm) // 2
    return Subset(data.train, perm[:half]), Subset(data.train, perm[half:])


@dataclass
class SearchState:
    """Everything a search carries from epoch to epoch; `Searcher.run` continues from it (the
    calibration rounds after a verify are more epochs of the same state)."""

    space: SearchSpace
    cfg: SearchConfig
    constraints: list[Constraint]
    net: SuperNet
    alpha: torch.Tensor
    rows: list[dict] = field(default_factory=list)
    epoch: int = 0
    step: int = 0
    wall_s: float = 0.0
    derived_from: str | None = None  # the argmax, where `derive` changed it to meet the targets

    def arch(self) -> Arch:
        a = masked(self.alpha.detach().cpu(), torch.as_tensor(self.space.allowed))
        return self.space.from_indices(a.argmax(-1).numpy())

    def probabilities(self) -> np.ndarray:
        return probabilities(self.alpha.detach().cpu(), torch.as_tensor(self.space.allowed)).numpy()


class Searcher:
    """One gradient search over `space` on `data`; call `run(epochs)` once or several times."""

    State = SearchState

    def __init__(self, space: SearchSpace, data: Data, constraints: list[Constraint], cfg: SearchConfig):
        self.rank, self.world, self.device = distributed()
        torch.manual_seed(cfg.seed)
        net = self.new_net(space).to(self.device, memory_format=layout(self.device))
        alpha = self.new_alpha(space, net).to(self.device).requires_grad_(True)
        for c in constraints:
            c.predictor.module.to(self.device)
        self.state = self.State(space, cfg, constraints, net, alpha)
        self.allowed = torch.as_tensor(space.allowed, device=self.device)
        self.ddp = DistributedDataParallel(net, find_unused_parameters=True) if self.world > 1 else net
        self.w_opt = torch.optim.SGD(param_groups(net, cfg.w_weight_decay), lr=cfg.w_lr, momentum=cfg.w_momentum, nesterov=True)
        self.a_opt = torch.optim.Adam([alpha], lr=cfg.alpha_lr, betas=(0.5, 0.999), weight_decay=self.alpha_decay(cfg))
        w_half, a_half = split(data, cfg.seed)
        self.w_sampler = DistributedSampler(w_half, self.world, self.rank, shuffle=True, seed=cfg.seed, drop_last=True)
        self.a_sampler = DistributedSampler(a_half, self.world, self.rank, shuffle=True, seed=cfg.seed + 1, drop_last=True)
        self.w_loader = DataLoader(w_half, cfg.batch, sampler=self.w_sampler, drop_last=True)
        self.a_loader = DataLoader(a_half, cfg.batch, sampler=self.a_sampler, drop_last=True)
        if len(self.w_loader) == 0 or len(self.a_loader) == 0:
            raise UserError(f"--batch {cfg.batch} x {self.world} processes is larger than half the {len(data.train)} training images")
        self.steps_per_epoch = min(len(self.w_loader), len(self.a_loader))
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.gen = torch.Generator().manual_seed(cfg.seed)  # the same on every rank: the same gates
        cuda = self.device.type == "cuda"
        self.amp = cfg.amp and cuda and torch.cuda.is_bf16_supported()  # bf16: no loss scaling needed

    # -- the supernet, α, gates and cost terms per method ----------------------------------------
    def new_net(self, space: SearchSpace) -> torch.nn.Module:
        return SuperNet(space)

    def new_alpha(self, space: SearchSpace, net: SuperNet) -> torch.Tensor:
        return torch.zeros(space.allowed.shape)

    def alpha_decay(self, cfg: SearchConfig) -> float:
        return cfg.alpha_weight_decay

    def gates(self, tau: float) -> tuple[torch.Tensor, str]:
        """What the supernet's forward takes, and its mode (see `SuperNet.forward`)."""
        m, a = self.state.cfg.method, self.state.alpha
        if m == "lightnas":
            return gumbel_hard(a, self.allowed, tau, self.gen), "single"
        if m == "fbnet":
            return gumbel_soft(a, self.allowed, tau, self.gen), "multi"
        return binarized(a, self.allowed, self.gen), "single"

    def cost_term(self, gates: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The cost part of the loss for an L x K gate matrix, and each constraint's value."""
        s, cfg = self.state, self.state.cfg
        term = torch.zeros((), device=self.device)
        values = {}
        for c in s.constraints:
            if cfg.method == "proxyless":
                v = c.value(probabilities(s.alpha, self.allowed))
                term = term + cfg.lam * v / c.target
            else:
                v = c.value(gates)
                if not cfg.learned_lambda:
                    term = term + cfg.lam * torch.log(v.clamp_min(1e-6))
                else:
                    r = v / c.target - 1
                    quad = r.clamp_min(0) if c.hard_max else r
                    term = term + c.lam * r + 0.5 * cfg.rho * quad ** 2
            values[c.name] = float(v.detach())
        return term, values

    # -- the loop -----------------------------------------------------------------------------
    def run(self, epochs: int, train_w: bool = True, train_alpha: bool = True,
            on_epoch: Callable[[dict], None] = lambda row: None) -> SearchState:
        """Run `epochs` more epochs: α is frozen during warm-up or when `train_alpha` is False
        (uniform paths: the one-shot training of `evolution`), w when `train_w` is False."""
        s, cfg = self.state, self.state.cfg
        for _ in range(epochs):
            t0 = time.perf_counter()
            self.w_sampler.set_epoch(s.epoch)
            self.a_sampler.set_epoch(s.epoch)
            search_alpha = train_alpha and s.epoch >= cfg.warmup_epochs
            sums = np.zeros(4)
            for (xw, yw), (xa, ya) in zip(self.w_loader, self.a_loader):
                tau = cfg.tau(s.epoch + (s.step % self.steps_per_epoch) / self.steps_per_epoch)
                for g in self.w_opt.param_groups:
                    g["lr"] = cfg.w_lr * lr_factor(min(s.step, self.total_steps - 1), 0, self.total_steps)
                for g in self.a_opt.param_groups:
                    g["lr"] = cfg.alpha_lr_at(s.epoch + (s.step % self.steps_per_epoch) / self.steps_per_epoch)
                xw, yw = xw.to(self.device, non_blocking=True, memory_format=layout(self.device)), yw.to(self.device, non_blocking=True)
                if train_w:
                    sums[0] += self._w_step(xw, yw, tau, search_alpha)
                row = {"epoch": s.epoch + 1, "step": s.step + 1, "tau": tau}
                if search_alpha:
                    xa, ya = xa.to(self.device, non_blocking=True, memory_format=layout(self.device)), ya.to(self.device, non_blocking=True)
                    row.update(self._alpha_step(xa, ya, tau, train_w))
                    sums[1:] += [row["val_loss"], row["val_acc"], 1]
                s.rows.append(row)
                s.step += 1
            s.epoch += 1
            s.wall_s += time.perf_counter() - t0
            arch = s.arch()
            summary = {"train_loss": sums[0] / self.steps_per_epoch,
                       "epoch_val_loss": sums[1] / sums[3] if sums[3] else float("nan"),
                       "epoch_val_acc": sums[2] / sums[3] if sums[3] else float("nan"),
                       "arch": arch.string, "wall_s": s.wall_s,
                       **{f"argmax_{c.name}": c.predict(arch)[0] for c in s.constraints},
                       **{f"lambda_{c.name}": self.multiplier(c) for c in s.constraints}}
            s.rows[-1].update(summary)  # per-epoch figures ride on the epoch's last step row
            if not (math.isfinite(summary["train_loss"]) and bool(torch.isfinite(s.alpha).all())):
                raise UserError(f"search diverged in epoch {s.epoch}: the loss is {summary['train_loss']} "
                                f"(lower --w-lr or --alpha-lr?); nothing written")
            on_epoch(s.rows[-1])
        return s

    def multiplier(self, c: Constraint) -> float:
        return c.lam if self.state.cfg.learned_lambda else self.state.cfg.lam

    def _w_step(self, x, y, tau: float, search_alpha: bool) -> float:
        """One SGD step of w on its half, through gates drawn from the current α."""
        with torch.no_grad():
            gates, mode = self.gates(tau)
        self.ddp.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss = F.cross_entropy(self.ddp(x, gates, mode), y)
        self.w_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.w_opt.step()
        return float(loss.detach())

    def _alpha_step(self, x, y, tau: float, train_w: bool) -> dict:
        """One step of α (and λ) on the other half, w frozen."""
        s = self.state
        gates, mode = self.gates(tau)
        s.net.train()
        # The bare module with w frozen: no weight gradients to compute, and none for DDP's hooks
        # to see (they would fire outside a DDP step); only α's are averaged over the ranks.
        params = [p for p in s.net.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                out = s.net(x, gates, mode)
                ce = F.cross_entropy(out, y)
            term, values = self.cost_term(gates)
            self.a_opt.zero_grad(set_to_none=True)
            (ce + term).backward()
        finally:
            for p in params:
                p.requires_grad_(True)
        if self.world > 1:
            dist.all_reduce(s.alpha.grad)
            s.alpha.grad /= self.world
        self.a_opt.step()
        return self._ascend(out, y, ce, values)

    def _ascend(self, out, y, ce, values: dict) -> dict:
        """λ's dual-ascent step where it is learned, and the step's row."""
        s, cfg = self.state, self.state.cfg
        if cfg.learned_lambda:
            for c in s.constraints:
                c.ascend(values[c.name], cfg.lambda_lr)
        acc = float((out.argmax(1) == y).float().mean())
        return {"val_loss": float(ce.detach()), "val_acc": acc,
                **{c.name: values[c.name] for c in s.constraints},
                **{f"lambda_{c.name}": self.multiplier(c) for c in s.constraints}}
