"""The built-in notifiers, registered under the `ce_agent.notifiers` entry-point group."""
