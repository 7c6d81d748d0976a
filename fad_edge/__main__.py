"""`python -m fad_edge` (and `torchrun -m fad_edge train ...`) runs the CLI."""

from fad_edge.cli import main

main()
