"""The faces of Tessera: the `tessera` command line and the PySide6 desktop app."""
