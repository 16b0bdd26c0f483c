"""The Tessera desktop app (PySide6): one module per screen, dialog or list.

The GUI is a thin face over the same core the CLI calls (``vault``, ``identity``, ``agents``).
``main_window`` only assembles screens; long work leaves the GUI thread through ``worker``.
Nothing here is imported by the core packages.
"""

from app.gui.qt_compat import pin_singletons

# Before any Qt call: see qt_compat for the PySide6 6.12 / Python 3.11 reference-count bug.
pin_singletons()
