"""`python -m batchvision.cli` is the `batchvision` command."""

from batchvision.cli.main import main

main()
