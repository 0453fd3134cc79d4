"""Slurm adapter: shift, suspend and relocate Slurm jobs; adopt native jobs that opt in.

Found by the core through the entry point ``slurm = "gridshift.adapters.slurm:build"``.
"""

from __future__ import annotations

from ...scheduler.clock import Clock
from ...scheduler.config import Settings
from .adapter import SlurmAdapter
from .commands import SlurmCli, SlurmCommandError
from .formats import SlurmJob

__all__ = ["SlurmAdapter", "SlurmCli", "SlurmCommandError", "SlurmJob", "build"]


def build(settings: Settings, clock: Clock) -> SlurmAdapter | None:
    """The adapter for `settings.slurm`, or None when Slurm is not configured."""
    if settings.slurm is None:
        return None
    return SlurmAdapter(settings.slurm, clock)
