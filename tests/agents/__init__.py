"""Tests of the federated task runtime (agents/)."""
