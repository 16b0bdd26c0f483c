"""Streaming importers, one module per format; see base.py for the contract."""

from vault.importers.base import REGISTRY, Importer, Row, Source, register

__all__ = ["REGISTRY", "Importer", "Row", "Source", "register"]
