"""The main window: assembles the screens, the navigation, locking, the tray and drops.

It holds no screen logic: screens talk to the core and to each other through the Session's
signals; this module only decides which screen is visible.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QProgressDialog,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.gui.consents_screen import ConsentsScreen
from app.gui.data_screen import DataScreen
from app.gui.dataset_actions import delete_dataset, export_dataset
from app.gui.dataset_view import DatasetView
from app.gui.errors import show_error
from app.gui.first_run import FirstRunScreen
from app.gui.history_screen import HistoryScreen
from app.gui.idle_lock import IdleLock
from app.gui.import_dialog import ImportDialog, preload_importers
from app.gui.overview import OverviewScreen
from app.gui.requests_screen import RequestsScreen
from app.gui.rewards_screen import RewardsScreen
from app.gui.session import EXCHANGE_CLIENT, Session, vault_exists
from app.gui.settings_screen import SettingsScreen
from app.gui.style import app_icon
from app.gui.tasks_screen import TasksScreen
from app.gui.tray import Tray
from app.gui.unlock_dialog import UnlockScreen

SYNC_MINUTES = 5
SCREENS = (
    ("overview", "Overview"),
    ("data", "Data"),
    ("requests", "Requests"),
    ("consents", "Consents"),
    ("tasks", "Tasks"),
    ("rewards", "Rewards"),
    ("history", "Access history"),
    ("settings", "Identity & settings"),
)


class MainWindow(QMainWindow):
    """First run, unlock, or the unlocked app with its navigation."""

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.demo = None  # a DemoFolder while a demo vault is open
        self.setWindowTitle("Tessera")
        self.setWindowIcon(app_icon())
        self.resize(1280, 800)
        self.setAcceptDrops(True)
        self.first_run = FirstRunScreen(session)
        self.unlock = UnlockScreen(session)
        self.root = QStackedWidget()
        self.root.addWidget(self.first_run)
        self.root.addWidget(self.unlock)
        self.root.addWidget(self._build_app())
        self.setCentralWidget(self.root)
        self.idle = IdleLock(self.lock, session.idle_minutes(), self)
        self.tray = Tray(self, app_icon(), self.lock, QApplication.quit, self.notice)
        self._wire()
        self.show_start()

    # -- assembly ------------------------------------------------------------------------

    def _build_app(self) -> QWidget:
        s = self.session
        self.overview = OverviewScreen(s)
        self.data = DataScreen(s)
        self.dataset = DatasetView(s)
        self.data_stack = QStackedWidget()
        self.data_stack.addWidget(self.data)
        self.data_stack.addWidget(self.dataset)
        self.requests = RequestsScreen(s)
        self.consents = ConsentsScreen(s)
        self.tasks = TasksScreen(s)
        self.rewards = RewardsScreen(s)
        self.history = HistoryScreen(s)
        self.settings = SettingsScreen(s)
        widgets = (
            self.overview,
            self.data_stack,
            self.requests,
            self.consents,
            self.tasks,
            self.rewards,
            self.history,
            self.settings,
        )
        self.nav = QListWidget()
        self.nav.setObjectName("nav")
        self.nav.setAccessibleName("Screens")
        self.nav.setFixedWidth(210)
        self.screens = QStackedWidget()
        for (key, title), widget in zip(SCREENS, widgets, strict=True):
            item = QListWidgetItem(title)
            item.setData(Qt.ItemDataRole.UserRole, key)
            self.nav.addItem(item)
            self.screens.addWidget(widget)
        side = QVBoxLayout()
        side.addWidget(self.nav, 1)
        self.lock_button = QPushButton("Lock")
        self.lock_button.setToolTip("Lock the vault now (Ctrl+L)")
        side.addWidget(self.lock_button)
        area = QWidget()
        row = QHBoxLayout(area)
        row.addLayout(side)
        row.addWidget(self.screens, 1)
        self.nav.currentRowChanged.connect(self.screens.setCurrentIndex)
        self.lock_button.clicked.connect(self.lock)
        return area

    def _wire(self) -> None:
        s = self.session
        s.unlocked.connect(self._unlocked)
        s.locked.connect(self._locked)
        self.first_run.demo_requested.connect(self.start_demo)
        self.first_run.folder_opened.connect(self.show_start)
        self.unlock.other_folder.connect(self.first_run.show_welcome)
        self.unlock.other_folder.connect(lambda: self.root.setCurrentWidget(self.first_run))
        self.overview.go.connect(self.show_screen)
        self.data.open_requested.connect(self.open_dataset)
        self.data.import_requested.connect(lambda: self.import_file(None))
        self.data.export_requested.connect(lambda n: export_dataset(self, s, n))
        self.data.delete_requested.connect(lambda n: delete_dataset(self, s, n))
        self.dataset.back.connect(lambda: self.data_stack.setCurrentWidget(self.data))
        self.dataset.export_requested.connect(lambda n: export_dataset(self, s, n))
        self.dataset.delete_requested.connect(lambda n: delete_dataset(self, s, n))
        self.dataset.history_requested.connect(self.open_history)
        s.data_changed.connect(self.dataset.refresh_soon)
        self.settings.idle_minutes_changed.connect(self.idle.set_minutes)
        self.requests.synced.connect(self.announce)
        self.sync_timer = QTimer(self)
        self.sync_timer.setInterval(SYNC_MINUTES * 60_000)
        self.sync_timer.timeout.connect(self.background_sync)
        lock = QAction("Lock", self)
        lock.setShortcut(QKeySequence("Ctrl+L"))
        lock.triggered.connect(self.lock)
        self.addAction(lock)
        for number, (key, _title) in enumerate(SCREENS, 1):
            action = QAction(self)
            action.setShortcut(QKeySequence(f"Ctrl+{number}"))
            action.triggered.connect(lambda _=False, k=key: self.show_screen(k))
            self.addAction(action)

    # -- states --------------------------------------------------------------------------

    def show_start(self) -> None:
        """Unlock screen when the folder holds a vault, first run otherwise."""
        if self.session.is_unlocked():
            self._unlocked()
        elif vault_exists(self.session.folder):
            self.root.setCurrentWidget(self.unlock)
            self.unlock.show_unlock()
        else:
            self.root.setCurrentWidget(self.first_run)
            self.first_run.show_welcome()

    def _unlocked(self) -> None:
        self.idle.set_minutes(self.session.idle_minutes())
        self.idle.touch()
        self.root.setCurrentIndex(2)
        self.show_screen("overview")
        self.statusBar().showMessage("Unlocked", 3000)
        # Load the importers off the GUI thread now, so the import dialog opens at once later.
        self.session.work.start(preload_importers)
        self.sync_timer.start()
        self.background_sync()

    def _locked(self) -> None:
        self.sync_timer.stop()
        self.data_stack.setCurrentWidget(self.data)
        self.show_start()
        self.statusBar().showMessage("Locked: the key was removed from memory.", 5000)

    def lock(self) -> None:
        """Lock now: running work is cancelled and the key is dropped."""
        self.session.lock()

    def background_sync(self) -> None:
        """Quietly fetch new requests when an exchange is set; announce the new ones."""
        from agents.vault_sync import client_for, exchange_url, sync_requests

        vault = self.session.vault
        if vault is None or not exchange_url(vault):
            return

        def found(result: dict) -> None:
            self.session.requests_changed.emit()
            self.announce(result["new"])

        self.session.work.start(
            lambda _p, _c: sync_requests(vault, client_for(vault, **EXCHANGE_CLIENT)),
            found,
            lambda error: self.notice(f"Could not reach the exchange: {error}"),
        )

    def announce(self, new: list) -> None:
        """A tray notification for each newly arrived request."""
        for item in new:
            self.tray.notify(
                "New request",
                f"{item.get('organization', 'An organization')} asks to learn from your data."
                " Open Tessera to read it; nothing happens until you decide.",
            )

    def notice(self, text: str) -> None:
        """A short message in the status bar."""
        self.statusBar().showMessage(text, 10_000)

    def show_screen(self, key: str) -> None:
        """Switch to screen ``key`` (one of SCREENS)."""
        keys = [k for k, _ in SCREENS]
        if key in keys and self.session.is_unlocked():
            self.nav.setCurrentRow(keys.index(key))
            if key == "data":
                self.data_stack.setCurrentWidget(self.data)

    def open_dataset(self, name: str) -> None:
        """Show one dataset's records and charts."""
        try:
            self.dataset.open_dataset(name)
        except Exception as exc:  # noqa: BLE001 - shown to the person, never raised
            show_error(self, "Open dataset", exc)
            return
        self.show_screen("data")
        self.data_stack.setCurrentWidget(self.dataset)
        self.dataset.table.setFocus()

    def open_history(self, name: str) -> None:
        """Show the access history of dataset ``name``."""
        self.show_screen("history")
        self.history.show_dataset(name)

    # -- import, drops and the demo ------------------------------------------------------

    def import_file(self, path: Path | None, start: bool = False) -> ImportDialog | None:
        """Open the import dialog (for ``path``, started at once when ``start``)."""
        if not self.session.is_unlocked():
            return None
        dialog = ImportDialog(self.session, path, self)
        dialog.setWindowModality(Qt.WindowModality.WindowModal)
        dialog.open()
        if start and path is not None:
            dialog.start()
        return dialog

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # Qt API name
        """Accept local files while unlocked."""
        urls = event.mimeData().urls()
        if self.session.is_unlocked() and urls and all(u.isLocalFile() for u in urls):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # Qt API name
        """Import the first dropped file right away."""
        urls = event.mimeData().urls()
        if urls:
            event.acceptProposedAction()
            self.import_file(Path(urls[0].toLocalFile()), start=True)

    def start_demo(self) -> None:
        """Create a throwaway demo vault in the worker and open it."""
        from app.gui.demo import DemoFolder, create_demo_vault

        demo = DemoFolder()
        busy = QProgressDialog("Preparing the demo with sample data…", "", 0, 0, self)
        busy.setCancelButton(None)
        busy.setWindowModality(Qt.WindowModality.WindowModal)
        busy.setMinimumDuration(0)

        def done(vault: object) -> None:
            busy.close()
            self.demo = demo
            self.session.set_folder(demo.vault)
            self.session.open(vault)  # type: ignore[arg-type]

        def failed(error: BaseException) -> None:
            busy.close()
            demo.cleanup()
            show_error(self, "Demo", error)

        self.session.work.start(lambda p, c: create_demo_vault(demo, p, c), done, failed)

    def closeEvent(self, event: QCloseEvent) -> None:  # Qt API name
        """Lock (dropping the key) and remove a demo folder on close."""
        self.session.lock()
        if self.demo is not None:
            self.demo.cleanup()
            self.demo = None
        super().closeEvent(event)
