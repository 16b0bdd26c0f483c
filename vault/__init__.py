"""The encrypted store: keys, schema, datasets, importers, consent-scoped reads, access log."""

__version__ = "0.1.0"
