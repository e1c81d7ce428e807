"""Issue-35 reference: parameter counts of NAS-Bench-201 nets built by the authors' own code, for
tests/test_nb201.py to hold nasctl's builder to.

The reference is xautodl 1.0.0 (D-X-Y/AutoDL-Projects on PyPI): `TinyNetwork(C=16, N=5, genotype,
classes)` from xautodl.models.cell_infers, the genotype parsed by its `Structure.str2structure`,
built on the meta device and counted as the sum of `numel()` over its parameters. xautodl pins
numpy <= 1.19, so install it beside nasctl without its dependencies (it needs only torch here):

    pip install --no-deps xautodl==1.0.0
    python benchmarks/nb201_reference.py > tests/data/nb201_xautodl_params.csv

The sample: the 5 cells with one op on every edge (all `none` and all `nor_conv_3x3` are the
smallest and largest nets), and 300 cells drawn uniformly (seed 0), each at the benchmark's three
settings (CIFAR-10, CIFAR-100, ImageNet16-120).
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from xautodl.models.cell_infers.tiny_network import TinyNetwork
from xautodl.models.cell_searchs.genotypes import Structure

from nasctl.space import load_space

SETTINGS = {"cifar10": 10, "cifar100": 100, "imagenet16-120": 120}


def main() -> int:
    space = load_space("nb201")
    k = len(space.ops)
    idx = [[i] * space.num_layers for i in range(k)]
    idx += np.random.default_rng(0).integers(0, k, (300, space.num_layers)).tolist()
    print("macro,arch,params")
    for macro, classes in SETTINGS.items():
        for row in idx:
            arch = space.from_indices(row).string
            with torch.device("meta"):
                net = TinyNetwork(16, 5, Structure.str2structure(arch), classes)
            print(f"{macro},{arch},{sum(p.numel() for p in net.parameters())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
