"""Federated task runtime: task packages, the organization SDK, the model validator, the runner."""
