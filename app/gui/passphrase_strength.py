"""A passphrase field pair with a strength meter (zxcvbn) and a confirmation check.

zxcvbn estimates how many guesses a passphrase needs, from dictionaries and common patterns;
its 0-4 score drives the meter and its feedback becomes the hint under it. Only the first 100
characters are scored: zxcvbn's time grows with length and longer passphrases are strong anyway.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFormLayout, QLabel, QLineEdit, QProgressBar, QWidget

MIN_LENGTH = 8  # the CLI's minimum too (app/commands/vault_cmds.py)
MIN_SCORE = 2
WORDS = ("Very weak", "Weak", "Fair", "Strong", "Very strong")
COLORS = ("#c62828", "#e65100", "#f9a825", "#558b2f", "#2e7d32")


def strength(passphrase: str) -> tuple[int, str]:
    """zxcvbn score 0-4 and one plain hint (empty when there is nothing to add)."""
    if not passphrase:
        return 0, ""
    from zxcvbn import zxcvbn

    result = zxcvbn(passphrase[:100])
    feedback = result.get("feedback") or {}
    hint = feedback.get("warning") or " ".join(feedback.get("suggestions") or [])
    return int(result["score"]), hint


class PassphraseFields(QWidget):
    """New passphrase + confirmation + meter; ``acceptable`` says whether it may be used."""

    changed = Signal()

    def __init__(self, label: str = "Passphrase", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.passphrase = QLineEdit()
        self.passphrase.setEchoMode(QLineEdit.EchoMode.Password)
        self.passphrase.setAccessibleName(label)
        self.passphrase.setPlaceholderText(f"At least {MIN_LENGTH} characters; a few words work")
        self.confirm = QLineEdit()
        self.confirm.setEchoMode(QLineEdit.EchoMode.Password)
        self.confirm.setAccessibleName(f"Confirm {label.lower()}")
        self.meter = QProgressBar()
        self.meter.setRange(0, 4)
        self.meter.setTextVisible(True)
        self.meter.setFormat("")
        self.meter.setAccessibleName("Passphrase strength")
        self.meter.setMaximumHeight(14)
        self.hint = QLabel()
        self.hint.setWordWrap(True)
        self.hint.setProperty("role", "subtitle")
        self.match = QLabel()
        self.match.setProperty("role", "subtitle")
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow(f"{label}:", self.passphrase)
        form.addRow("Strength:", self.meter)
        form.addRow("", self.hint)
        form.addRow("Type it again:", self.confirm)
        form.addRow("", self.match)
        self.score = 0
        self.passphrase.textChanged.connect(self._update)
        self.confirm.textChanged.connect(self._update)
        self._update()

    def _update(self) -> None:
        text = self.passphrase.text()
        self.score, hint = strength(text)
        self.meter.setValue(self.score if text else 0)
        word = WORDS[self.score] if text else ""
        self.meter.setFormat(word)
        self.meter.setStyleSheet(
            f"QProgressBar::chunk {{ background: {COLORS[self.score]}; }}" if text else ""
        )
        if text and len(text) < MIN_LENGTH:
            hint = f"Use at least {MIN_LENGTH} characters. {hint}".strip()
        elif text and self.score < MIN_SCORE:
            hint = hint or "Too easy to guess: add another uncommon word."
        self.hint.setText(hint)
        confirm = self.confirm.text()
        if not confirm:
            self.match.setText("")
        elif confirm == text:
            self.match.setText("The passphrases match.")
        else:
            self.match.setText("The passphrases do not match yet.")
        self.changed.emit()

    def acceptable(self) -> bool:
        """True when long enough, strong enough, and typed the same twice."""
        text = self.passphrase.text()
        return len(text) >= MIN_LENGTH and self.score >= MIN_SCORE and self.confirm.text() == text

    def value(self) -> str:
        """The chosen passphrase."""
        return self.passphrase.text()

    def clear(self) -> None:
        """Forget what was typed."""
        self.passphrase.clear()
        self.confirm.clear()
