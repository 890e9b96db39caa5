"""`python -m cosmos_export` is the same as the `cosmos-export` command."""

from cosmos_export.cli import main

main()
