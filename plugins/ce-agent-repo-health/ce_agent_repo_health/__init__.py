"""Repository-health checks for ce-agent: git repository and hooks, tools, versions, locks, configs."""
