"""The local single-node scheduler: policy (pure) and the agent (daemon)."""
