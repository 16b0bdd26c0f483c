"""Look and feel: Fusion with the system's light or dark palette, a small style sheet, the icon.

Colours in the style sheet come from ``palette(...)`` roles, so one sheet serves light and dark.
Qt 6 scales for high-DPI screens by itself; we only ask it not to round fractional factors.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QPalette
from PySide6.QtWidgets import QApplication

ASSETS = Path(__file__).resolve().parents[2] / "assets"
ACCENT = QColor("#2f6f73")  # the teal of the icon
OK_COLOR = "#2e7d32"
BAD_COLOR = "#c62828"

STYLE_SHEET = """
QListWidget#nav { border: none; outline: 0; background: palette(window); font-size: 11pt;
                  padding: 6px; }
QListWidget#nav::item { padding: 8px 10px; border-radius: 6px; }
QListWidget#nav::item:selected { background: palette(highlight); color: palette(highlighted-text); }
QLabel[role="title"] { font-size: 17pt; font-weight: 600; }
QLabel[role="subtitle"] { color: palette(placeholder-text); }
QLabel[role="empty"] { color: palette(placeholder-text); font-size: 12pt; }
QLabel[role="big"] { font-size: 20pt; font-weight: 600; }
QLabel[role="code"] { font-family: monospace; font-size: 14pt; letter-spacing: 1px; }
QFrame[role="card"] { background: palette(base); border: 1px solid palette(mid);
                      border-radius: 8px; }
QPushButton { padding: 5px 14px; }
QPushButton[role="primary"] { font-weight: 600; }
"""


def dark_palette() -> QPalette:
    """A dark palette for Fusion, used when the system says it prefers dark."""
    p = QPalette()
    window, base, text = QColor(37, 39, 43), QColor(28, 30, 33), QColor(230, 230, 230)
    for role, color in (
        (QPalette.ColorRole.Window, window),
        (QPalette.ColorRole.WindowText, text),
        (QPalette.ColorRole.Base, base),
        (QPalette.ColorRole.AlternateBase, QColor(44, 47, 51)),
        (QPalette.ColorRole.Text, text),
        (QPalette.ColorRole.Button, QColor(50, 53, 58)),
        (QPalette.ColorRole.ButtonText, text),
        (QPalette.ColorRole.ToolTipBase, base),
        (QPalette.ColorRole.ToolTipText, text),
        (QPalette.ColorRole.PlaceholderText, QColor(150, 150, 150)),
        (QPalette.ColorRole.Mid, QColor(70, 73, 78)),
        (QPalette.ColorRole.Highlight, ACCENT.lighter(120)),
        (QPalette.ColorRole.HighlightedText, QColor(255, 255, 255)),
        (QPalette.ColorRole.Link, QColor(120, 190, 195)),
    ):
        p.setColor(role, color)
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor(120, 120, 120))
    return p


def light_palette(app: QApplication) -> QPalette:
    """Fusion's own light palette with our accent for selections."""
    p = app.style().standardPalette()
    p.setColor(QPalette.ColorRole.Highlight, ACCENT)
    p.setColor(QPalette.ColorRole.HighlightedText, QColor(255, 255, 255))
    p.setColor(QPalette.ColorRole.Link, ACCENT.darker(110))
    return p


def is_dark() -> bool:
    """True when the system prefers a dark colour scheme ($TESSERA_THEME=dark|light overrides)."""
    forced = os.environ.get("TESSERA_THEME", "").lower()
    if forced in ("dark", "light"):
        return forced == "dark"
    return QGuiApplication.styleHints().colorScheme() == Qt.ColorScheme.Dark


def apply_palette(app: QApplication) -> None:
    """Set the palette that matches the system's current colour scheme."""
    app.setPalette(dark_palette() if is_dark() else light_palette(app))


def prepare_high_dpi() -> None:
    """Call before creating the QApplication: keep fractional scale factors sharp."""
    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(
        Qt.HighDpiScaleFactorRoundingPolicy.PassThrough
    )


def app_icon() -> QIcon:
    """The Tessera icon (SVG, with the PNG rendering as a fallback)."""
    icon = QIcon()
    for name in ("tessera.svg", "tessera.png"):
        path = ASSETS / name
        if path.exists():
            icon.addFile(str(path))
    return icon


def apply_style(app: QApplication) -> None:
    """Fusion, the system light/dark palette (following changes), our style sheet and icon."""
    app.setStyle("Fusion")
    apply_palette(app)
    app.styleHints().colorSchemeChanged.connect(lambda _scheme: apply_palette(app))
    app.setStyleSheet(STYLE_SHEET)
    app.setWindowIcon(app_icon())
