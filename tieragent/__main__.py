"""`python -m tieragent` is the `tieragent` command."""

from tieragent.cli import main

main()
