"""Engine adapters: local processes, Slurm, and the NVML power-cap actuator.

The core finds adapters through the `gridshift.adapters` entry-point group; it never imports
this package directly.
"""
