"""The built-in checks, one module each, registered under the `ce_agent.checks` entry-point group."""
