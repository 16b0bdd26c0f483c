"""Access history: every entry of a dataset's log (when, who, what, why, how many rows),
filters by who, what and when, "Check history" (the core's verify), and a proof file for one
entry that anyone can check without the vault.

The primary text says what happened in plain words; the hashes and roots are under "Details".
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.gui.errors import show_error
from app.gui.formatting import (
    action_word,
    actor_word,
    dataset_title,
    local_time,
    organization_names,
    parse_iso,
)
from app.gui.session import Session
from app.gui.widgets import Banner, LazyRefresh, fill_table, screen_header, table
from app.gui.worker import CancelledFn, ProgressFn

PERIODS = (("Any time", None), ("Last 24 hours", 1), ("Last 7 days", 7), ("Last 30 days", 30))


def verify_text(report: dict) -> tuple[bool, str]:
    """The verify report in one plain sentence."""
    logs = report.get("datasets", {})
    entries = sum(d["entries"] for d in logs.values())
    if report.get("ok"):
        return True, (
            f"Your access history is intact: {entries:,} entries in {len(logs)} datasets match"
            " what this vault signed."
        )
    problems = report.get("problems", [])
    return False, (
        f"Your access history has been changed or rolled back ({len(problems)} problem"
        f"{'s' if len(problems) != 1 else ''} found). See Details."
    )


def verify_details(report: dict) -> str:
    """The technical part of a verify report: problems, then each log's size and root."""
    lines = [f"problem: {p}" for p in report.get("problems", [])]
    for name, log in sorted(report.get("datasets", {}).items()):
        state = "ok" if log["ok"] else "FAILED"
        lines.append(f"{name}: {log['entries']} entries, Merkle root {log['root']} ({state})")
    return "\n".join(lines)


class HistoryScreen(LazyRefresh, QWidget):
    """One dataset's access history, filters, verification and proof export."""

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.entries: list[dict] = []
        self.shown: list[dict] = []
        self.report: dict | None = None
        self.names: dict[str, str] = {}
        layout = QVBoxLayout(self)
        layout.addWidget(
            screen_header(
                "Access history",
                "Every import, export, deletion, consent and read of your data is recorded"
                " here, and signed so that changes can be detected.",
            )
        )
        top = QHBoxLayout()
        self.dataset = QComboBox()
        self.dataset.setAccessibleName("Dataset")
        self.dataset.setMinimumWidth(260)
        self.verify_button = QPushButton("Check history")
        self.verify_button.setToolTip("Check that no entry was changed, removed or rolled back")
        self.verify_button.setProperty("role", "primary")
        self.proof_button = QPushButton("Export proof of entry…")
        self.proof_button.setToolTip("Save a file that proves the selected entry is in the log")
        top.addWidget(QLabel("Dataset:"))
        top.addWidget(self.dataset)
        top.addStretch(1)
        top.addWidget(self.proof_button)
        top.addWidget(self.verify_button)
        layout.addLayout(top)
        banner_row = QHBoxLayout()
        self.banner = Banner()
        self.details_button = QPushButton("Details…")
        self.details_button.hide()
        banner_row.addWidget(self.banner, 1)
        banner_row.addWidget(self.details_button)
        layout.addLayout(banner_row)
        filters = QHBoxLayout()
        self.actor = QComboBox()
        self.actor.setAccessibleName("Filter by who")
        self.action = QComboBox()
        self.action.setAccessibleName("Filter by what")
        self.period = QComboBox()
        self.period.setAccessibleName("Filter by time")
        for text, days in PERIODS:
            self.period.addItem(text, days)
        for caption, combo in (
            ("Who:", self.actor),
            ("What:", self.action),
            ("When:", self.period),
        ):
            filters.addWidget(QLabel(caption))
            filters.addWidget(combo)
        filters.addStretch(1)
        self.count_label = QLabel()
        filters.addWidget(self.count_label)
        layout.addLayout(filters)
        self.table = table(["No.", "When", "Who", "What", "Why", "Rows"], "Access history", 4)
        layout.addWidget(self.table, 1)
        self.dataset.currentIndexChanged.connect(self._load_entries)
        for combo in (self.actor, self.action, self.period):
            combo.currentIndexChanged.connect(self._apply_filters)
        self.verify_button.clicked.connect(self.verify)
        self.details_button.clicked.connect(self._show_details)
        self.proof_button.clicked.connect(self.export_proof)
        self.table.itemSelectionChanged.connect(
            lambda: self.proof_button.setEnabled(self.selected() is not None)
        )
        self.follow(session, session.history_changed)
        self.proof_button.setEnabled(False)

    # -- loading -------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the list of logs, keeping the chosen dataset."""
        vault = self.session.vault
        if vault is None:
            return
        current = self.dataset.currentData()
        self.dataset.blockSignals(True)
        self.dataset.clear()
        for name in vault.log.datasets():
            self.dataset.addItem(f"{dataset_title(name)}  ({name})", name)
        index = self.dataset.findData(current)
        self.dataset.setCurrentIndex(max(0, index))
        self.dataset.blockSignals(False)
        self._load_entries()

    def show_dataset(self, name: str) -> None:
        """Show the history of dataset ``name``."""
        self.refresh()
        index = self.dataset.findData(name)
        if index >= 0:
            self.dataset.setCurrentIndex(index)

    def _load_entries(self) -> None:
        vault, name = self.session.vault, self.dataset.currentData()
        self.entries = vault.log.entries(name) if vault is not None and name else []
        own = vault.did if vault is not None else None
        self.names = organization_names(vault) if vault is not None else {}
        self._fill_combo(
            self.actor,
            "Everyone",
            {e["actor"]: actor_word(e["actor"], own, self.names) for e in self.entries},
        )
        self._fill_combo(
            self.action, "Everything", {e["action"]: action_word(e["action"]) for e in self.entries}
        )
        self._apply_filters()

    @staticmethod
    def _fill_combo(combo: QComboBox, everything: str, values: dict[str, str]) -> None:
        current = combo.currentData()
        combo.blockSignals(True)
        combo.clear()
        combo.addItem(everything, None)
        for value, text in sorted(values.items(), key=lambda kv: kv[1]):
            combo.addItem(text, value)
        combo.setCurrentIndex(max(0, combo.findData(current)))
        combo.blockSignals(False)

    def _apply_filters(self) -> None:
        actor, action, days = (
            self.actor.currentData(),
            self.action.currentData(),
            self.period.currentData(),
        )
        since = datetime.now(UTC) - timedelta(days=days) if days else None
        own = self.session.vault.did if self.session.vault is not None else None
        self.shown = [
            e
            for e in reversed(self.entries)  # newest first
            if (actor is None or e["actor"] == actor)
            and (action is None or e["action"] == action)
            and (since is None or (parse_iso(e["time"]) or since) >= since)
        ]
        fill_table(
            self.table,
            [
                [
                    e["seq"] + 1,
                    local_time(e["time"]),
                    actor_word(e["actor"], own, self.names),
                    action_word(e["action"]),
                    e["purpose"],
                    e["rows"],
                ]
                for e in self.shown
            ],
        )
        self.count_label.setText(f"{len(self.shown)} of {len(self.entries)} entries")

    def selected(self) -> dict | None:
        """The selected entry, if any."""
        rows = self.table.selectionModel().selectedRows()
        return self.shown[rows[0].row()] if rows else None

    def clear(self) -> None:
        """Forget everything shown (on lock)."""
        self.entries, self.shown, self.report = [], [], None
        self.dataset.clear()
        self.table.setRowCount(0)
        self.banner.hide()
        self.details_button.hide()

    # -- verify and proofs ---------------------------------------------------------------

    def verify(self) -> None:
        """Check every log and signed checkpoint in the worker; show the result."""
        vault = self.session.vault
        if vault is None:
            return
        self.verify_button.setEnabled(False)
        self.banner.show_result(True, "Checking…")

        def job(progress: ProgressFn, cancelled: CancelledFn) -> dict:
            return vault.verify()

        self.session.work.start(job, self._verified, self._verify_failed)

    def _verified(self, report: dict) -> None:
        self.verify_button.setEnabled(True)
        self.report = report
        ok, text = verify_text(report)
        self.banner.show_result(ok, text)
        self.details_button.show()

    def _verify_failed(self, error: BaseException) -> None:
        self.verify_button.setEnabled(True)
        self.banner.hide()
        show_error(self, "Check history", error)

    def _show_details(self) -> None:
        if self.report is None:
            return
        box = QMessageBox(self)
        box.setWindowTitle("Check history: details")
        box.setText(verify_text(self.report)[1])
        box.setDetailedText(verify_details(self.report))
        box.exec()

    def export_proof(self, out: Path | None = None) -> Path | None:
        """Save an inclusion proof for the selected entry; return the file written."""
        vault, entry, name = self.session.vault, self.selected(), self.dataset.currentData()
        if vault is None or entry is None or not name:
            return None
        if out is None:
            suggested = str(Path.home() / f"{name}-entry-{entry['seq'] + 1}.proof.json")
            chosen, _ = QFileDialog.getSaveFileName(self, "Save proof", suggested, "Proof (*.json)")
            if not chosen:
                return None
            out = Path(chosen)
        try:
            proof = vault.log.proof(name, entry["seq"])
            out.write_text(json.dumps(proof, indent=2), encoding="utf-8")
        except Exception as exc:  # noqa: BLE001 - shown to the person, never raised
            show_error(self, "Export proof", exc)
            return None
        self.banner.show_result(
            True,
            f"Proof of entry {entry['seq'] + 1} saved to {out}. Anyone can check it, without"
            " your vault, with `tessera log check-proof`.",
        )
        self.details_button.hide()
        return out
