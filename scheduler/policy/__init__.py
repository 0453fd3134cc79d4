"""Planners: pure functions from a Snapshot to Decisions."""
