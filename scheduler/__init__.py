"""gridshift: a carbon-aware workload scheduler agent for GPU clusters."""

__version__ = "0.1.0"
