"""`python -m cifarlab ...` and `torchrun --nproc-per-node N -m cifarlab run EXPERIMENT`."""

from cifarlab.cli import main

raise SystemExit(main())
