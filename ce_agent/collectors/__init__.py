"""The built-in collectors, registered under the `ce_agent.collectors` entry-point group."""
