"""Scheduling: nightly training and periodic health snapshots, each firing run once."""
