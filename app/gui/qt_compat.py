"""Guard against PySide6 6.12's lost references to None, True and False on Python 3.11.

PySide6 6.12 (abi3 wheels) treats None/True/False as immortal, which they are only from
Python 3.12 on (PEP 683): on 3.11 every ``Signal.emit()`` drops a reference to True, every
static ``processEvents()`` or Python slot run by a timer drops one to None, and so on. After a
few hundred worker signals the interpreter aborts with "Fatal Python error: bool_dealloc".

These three objects are static singletons that must never be freed, so we give each a very
large number of extra references once, at import: no amount of drift can bring them to zero.
This changes nothing else; on Python 3.12+ it does nothing (and must not touch immortal
objects' reference counts).
"""

from __future__ import annotations

import ctypes
import sys

EXTRA_REFERENCES = 1 << 40  # a trillion lost references before anything could go wrong
_SINGLETONS = (None, True, False, Ellipsis, NotImplemented)
_pinned = False


def pin_singletons() -> bool:
    """Add the extra references (once, Python < 3.12 only); True when it did something."""
    global _pinned
    if _pinned or sys.version_info >= (3, 12) or not hasattr(sys, "getrefcount"):
        return False
    for obj in _SINGLETONS:
        # ob_refcnt is the first field of every PyObject in CPython's release builds.
        ctypes.c_ssize_t.from_address(id(obj)).value += EXTRA_REFERENCES
    _pinned = True
    return True
