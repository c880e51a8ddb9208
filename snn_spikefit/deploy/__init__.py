"""Deployability: operation counts, DeployRatio and metrics, chip profiles, hardware checks."""
