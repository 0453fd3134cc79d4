"""Replay real carbon traces and job traces through a planner with a fake clock."""
