"""`python -m nasctl` (and `torchrun -m nasctl`) run the same CLI as the console script."""

from nasctl.cli import main

main()
