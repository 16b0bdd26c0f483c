"""The Tessera desktop app (PySide6): one module per screen, dialog or list.

The GUI is a thin face over the same core the CLI calls (``vault``, ``identity``, ``agents``).
``main_window`` only assembles screens; long work leaves the GUI thread through ``worker``.
Nothing here is imported by the core packages.
"""
