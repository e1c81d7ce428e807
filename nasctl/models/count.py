"""MACs and params of any module, counted once by forward hooks: the one source of every cost
figure (the builders, the cost table, `nasctl info`, the zoo's published-figure tests), and the
memory-traffic figures that a new device's latency table is fitted from."""

from __future__ import annotations

import torch
from torch import nn

FIELDS = ("macs", "params", "dw_macs", "traffic", "convs")


def count(module: nn.Module, shape) -> tuple[int, int]:
    """(MACs, params) of a module for one input of `shape` (see `count_all`)."""
    c = count_all(module, shape)
    return c["macs"], c["params"]


def count_all(module: nn.Module, shape) -> dict[str, int]:
    """MACs, params and what a device's speed depends on beyond them, counted by hooks during a
    forward: `dw_macs` (the depthwise share, slow per MAC on most hardware), `traffic` (elements
    read and written by the convolutions: memory-bound devices pay for these) and `convs` (kernel
    launches: a GPU at batch 1 pays per layer).

    MACs are those of convolutions and linear layers (the usual convention; BN and activations
    fold away at deployment). Build the module under ``torch.device("meta")`` and this costs no
    memory and almost no time.
    """
    got = dict.fromkeys(FIELDS, 0)

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            macs = out[0].numel() * (m.in_channels // m.groups) * k
            got["macs"] += macs
            got["dw_macs"] += macs if m.groups > 1 and m.groups == m.in_channels else 0
            got["traffic"] += inp[0][0].numel() + out[0].numel()
            got["convs"] += 1
        elif isinstance(m, nn.Linear):
            got["macs"] += m.in_features * m.out_features

    params = list(module.parameters())
    device = params[0].device if params else torch.device("meta")
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = module.training
    try:
        with torch.no_grad():
            module.eval()(torch.empty(shape, device=device))  # eval: BN accepts 1x1 maps
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    got["params"] = sum(p.numel() for p in params)
    return got
