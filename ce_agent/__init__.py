"""ce-agent: a small monitoring agent with Nagios-grade checks and Prometheus-native metrics."""

__version__ = "0.1.0"
