"""The Tessera desktop app (PySide6): one module per screen, dialog or list.

The GUI is a thin face over the same core the CLI calls (``vault``, ``identity``, ``agents``).
``main_window`` only assembles screens; long work leaves the GUI thread through ``worker``.
Nothing here is imported by the core packages.

PySide6 is pinned below 6.12: 6.12's abi3 wheels treat None/True/False as immortal, which they
are only from Python 3.12 on, so on 3.11 every ``Signal.emit()`` loses a reference to True until
the interpreter aborts ("bool_dealloc"). 6.11 does not.
"""
