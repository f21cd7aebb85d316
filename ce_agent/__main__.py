"""`python -m ce_agent`: the same as the `ce-agent` command."""

from ce_agent.cli import main

main()
