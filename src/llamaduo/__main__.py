"""`python -m llamaduo` runs the CLI."""

from llamaduo.cli import main

main()
