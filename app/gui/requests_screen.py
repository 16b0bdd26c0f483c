"""Requests: the inbox, and one request in plain words with Approve and Deny.

The detail is ``identity.summary.plain_summary`` (the text the CLI prints too): who asks and
whether their signature checked out, why, which data and time span, what leaves the computer,
the privacy guarantee in words, the work it takes, the reward, and when it expires.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.gui.approve_dialog import ApproveDialog
from app.gui.errors import show_error
from app.gui.formatting import local_time
from app.gui.session import EXCHANGE_CLIENT, Session
from app.gui.style import BAD_COLOR
from app.gui.widgets import Banner, LazyRefresh, empty_or, fill_table, label, table
from app.gui.worker import CancelledFn, ProgressFn

STATUS_WORDS = {
    "pending": "Waiting for you",
    "approved": "Approved",
    "denied": "Denied",
    "revoked": "Revoked",
    "expired": "Expired",
}


def work_words(request: object) -> str:
    """The compute a request asks for, in words (rounds, steps, examples per step)."""
    steps = request.rounds * request.local_steps  # type: ignore[attr-defined]
    return (
        f"{request.rounds} rounds of {request.local_steps} training steps on"  # type: ignore[attr-defined]
        f" {request.batch_size} days or examples each: {steps} small steps in all, usually"  # type: ignore[attr-defined]
        " seconds to a few minutes on this computer, run when you start them."
    )


class RequestsScreen(LazyRefresh, QWidget):
    """Inbox on the left, the chosen request on the right."""

    synced = Signal(list)  # the new requests of a sync: [{"id", "organization"}]

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.rows: list[dict] = []
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(label("Requests", "title"))
        top.addStretch(1)
        self.file_button = QPushButton("Open a request file…")
        self.sync_button = QPushButton("Check for new requests")
        self.sync_button.setProperty("role", "primary")
        top.addWidget(self.file_button)
        top.addWidget(self.sync_button)
        layout.addLayout(top)
        self.banner = Banner()
        layout.addWidget(self.banner)
        self.table = table(["Organization", "Purpose", "Status", "Received"], "Requests", 1)
        self.detail = QLabel()
        self.detail.setWordWrap(True)
        self.detail.setTextFormat(Qt.TextFormat.RichText)
        self.detail.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.detail.setAccessibleName("Request details")
        self.detail.setContentsMargins(12, 6, 12, 6)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.detail)
        buttons = QHBoxLayout()
        self.deny_button = QPushButton("Deny")
        self.approve_button = QPushButton("Approve…")
        self.approve_button.setProperty("role", "primary")
        buttons.addStretch(1)
        buttons.addWidget(self.deny_button)
        buttons.addWidget(self.approve_button)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(8, 0, 0, 0)
        right_layout.addWidget(scroll, 1)
        right_layout.addLayout(buttons)
        split = QSplitter()
        split.addWidget(self.table)
        split.addWidget(right)
        split.setSizes([420, 580])
        self.stack = empty_or(
            split,
            "No requests yet",
            "When an organization asks to train a model with your data, its request appears"
            " here in plain words. Nothing happens until you approve it.",
        )
        layout.addWidget(self.stack, 1)
        self.table.itemSelectionChanged.connect(self._show_selected)
        self.approve_button.clicked.connect(self.approve_selected)
        self.deny_button.clicked.connect(self.deny_selected)
        self.sync_button.clicked.connect(self.sync)
        self.file_button.clicked.connect(self._open_file)
        self.follow(session, session.requests_changed)
        self._show_selected()

    # -- the inbox -----------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the inbox, keeping the selection."""
        from vault import consent as vc

        vault = self.session.vault
        if vault is None:
            return
        chosen = self.selected_id()
        rows = vc.list_requests(vault)
        # Waiting ones first, then newest first (list_requests is newest first already).
        self.rows = sorted(rows, key=lambda r: r["status"] != "pending")
        fill_table(
            self.table,
            [
                [r["organization"], r["purpose"], STATUS_WORDS.get(r["status"], r["status"]),
                 local_time(r["received"], False)]
                for r in self.rows
            ],
        )  # fmt: skip
        self.stack.setCurrentIndex(1 if self.rows else 0)
        ids = [r["id"] for r in self.rows]
        self.table.selectRow(ids.index(chosen) if chosen in ids else 0)
        self._show_selected()

    def clear(self) -> None:
        """Forget the inbox (on lock)."""
        self.rows = []
        self.table.setRowCount(0)
        self.detail.clear()
        self.banner.hide()
        self.stack.setCurrentIndex(0)

    def selected_id(self) -> str | None:
        """The id of the selected request."""
        rows = self.table.selectionModel().selectedRows()
        return self.rows[rows[0].row()]["id"] if rows and self.rows else None

    def open_first(self) -> None:
        """Select the first request (the screenshots show its detail)."""
        if self.rows:
            self.table.selectRow(0)

    def _show_selected(self) -> None:
        from identity.summary import plain_summary
        from vault import consent as vc

        request_id, vault = self.selected_id(), self.session.vault
        if request_id is None or vault is None:
            self.detail.clear()
            self.approve_button.setEnabled(False)
            self.deny_button.setEnabled(False)
            return
        stored = vc.get_request(vault, request_id)
        status = next(r["status"] for r in self.rows if r["id"] == request_id)
        self.detail.setText(detail_html(plain_summary(stored.request), stored.request, status))
        pending = status == "pending"
        self.approve_button.setEnabled(pending)
        self.deny_button.setEnabled(pending)

    # -- decisions -----------------------------------------------------------------------

    def approve_selected(self) -> None:
        """Ask for the approval's choices, then issue the consent."""
        from vault import consent as vc

        request_id, vault = self.selected_id(), self.session.require()
        if request_id is None:
            return
        request = vc.get_request(vault, request_id).request
        present = {d["name"] for d in vault.datasets()}
        dialog = ApproveDialog(request, present, self)
        if not dialog.exec():
            return
        self.approve(request_id, *dialog.choices())

    def approve(self, request_id: str, datasets: list[str], budget: float, until: float) -> None:
        """Approve ``request_id`` with these choices (the consent is signed by your DID)."""
        from vault import consent as vc

        try:
            consent = vc.approve(self.session.require(), request_id, datasets, budget, until)
        except Exception as exc:  # noqa: BLE001 - shown to the person, never raised
            show_error(self, "Approve", exc)
            return
        self.banner.show_result(
            True,
            f"Approved. You can revoke it at any time under Consents. Training uses at most"
            f" ε = {consent.epsilon_budget:g} of privacy budget.",
        )
        self._changed()

    def deny_selected(self, ask: bool = True) -> None:
        """Deny the selected request after a confirmation."""
        from vault import consent as vc

        request_id = self.selected_id()
        if request_id is None:
            return
        if ask and (
            QMessageBox.question(self, "Deny request", "Deny this request? None of your data"
                                 " will be read.") != QMessageBox.StandardButton.Yes
        ):  # fmt: skip
            return
        try:
            vc.deny(self.session.require(), request_id)
        except Exception as exc:  # noqa: BLE001 - shown to the person, never raised
            show_error(self, "Deny", exc)
            return
        self.banner.show_result(True, "Denied. None of your data will be read for it.")
        self._changed()

    def _changed(self) -> None:
        self.session.requests_changed.emit()
        self.session.history_changed.emit()

    # -- fetching ------------------------------------------------------------------------

    def sync(self) -> None:
        """Fetch new requests from the exchange in the worker."""
        from agents.vault_sync import client_for, sync_requests

        vault = self.session.require()
        self.sync_button.setEnabled(False)
        self.banner.show_result(True, "Checking the exchange…")

        def job(progress: ProgressFn, cancelled: CancelledFn) -> dict:
            return sync_requests(vault, client_for(vault, **EXCHANGE_CLIENT))

        self.session.work.start(job, self._synced, self._sync_failed)

    def _synced(self, found: dict) -> None:
        self.sync_button.setEnabled(True)
        new, refused = found["new"], found["refused"]
        text = f"{len(new)} new request{'s' * (len(new) != 1)}."
        if refused:
            text += f" {len(refused)} refused: their signature or model did not check out."
        self.banner.show_result(not refused, text)
        self.session.requests_changed.emit()
        self.synced.emit(new)

    def _sync_failed(self, error: BaseException) -> None:
        self.sync_button.setEnabled(True)
        self.banner.show_result(False, f"Could not check for requests: {error}")

    def _open_file(self) -> None:
        chosen, _ = QFileDialog.getOpenFileName(
            self, "Open a request file", str(Path.home()), "Request files (*.json);;All (*)"
        )
        if chosen:
            self.import_file(Path(chosen))

    def import_file(self, path: Path) -> None:
        """Add the request in an offline request file (checked like one from an exchange)."""
        from agents.request_check import receive_request
        from agents.vault_sync import read_request_file

        try:
            token, package = read_request_file(path)
            request, new = receive_request(
                self.session.require(), token, package, f"file:{path.name}"
            )
        except Exception as exc:  # noqa: BLE001 - shown to the person, never raised
            show_error(self, "Open a request file", exc)
            return
        word = "Added" if new else "Already in your inbox:"
        self.banner.show_result(True, f"{word} the request from {request.organization}.")
        self.session.requests_changed.emit()


def detail_html(summary: dict, request: object, status: str) -> str:
    """The plain summary as rich text for the detail pane."""
    from html import escape

    def section(title: str, text: str) -> str:
        return f"<p><b>{escape(title)}</b><br>{escape(text)}</p>"

    verified = "✔ signature verified" if summary["verified"] else "✘ signature NOT verified"
    parts = [
        f"<h2>{escape(summary['title'])}</h2>",
        f"<p>{escape(STATUS_WORDS.get(status, status))} · {escape(summary['expires'])}</p>",
    ]
    parts += [f'<p style="color:{BAD_COLOR}"><b>{escape(w)}</b></p>' for w in summary["warnings"]]
    parts += [
        section("Who asks", f"{summary['organization']} — {verified}"),
        f"<p><small>{escape(summary['did'])}</small></p>",
        section("Why", summary["why"]),
        section("Your data", f"{summary['data_text']} {summary['time_range']}"),
        section("What leaves your computer", summary["what_leaves"]),
        section("Your privacy", summary["privacy"]),
        section("The work", work_words(request)),
        section("Reward", summary["reward"]),
    ]
    return "".join(parts)
