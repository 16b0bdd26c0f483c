"""The walk through the unlocked app that `--screenshots` records, screen by screen."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.gui.screenshots import Shooter, wait_until

if TYPE_CHECKING:
    from app.gui.demo import DemoFolder
    from app.gui.main_window import MainWindow


def _first(names: list[str], *wanted: str) -> str | None:
    for name in wanted:
        if name in names:
            return name
    return names[0] if names else None


def tour(window: MainWindow, shooter: Shooter, demo: DemoFolder | None) -> None:
    """Visit every main screen and save it; the numbering is the README's order."""
    shooter.shot(2, "overview")
    window.show_screen("data")
    shooter.shot(3, "data")
    names = window.data.names
    chosen = _first(names, "health.step_count", "health.heart_rate")
    if chosen:
        window.open_dataset(chosen)
        window.dataset.show_chart()
        wait_until(lambda: window.dataset.chart().stack.currentIndex() == 1, 60)
        shooter.shot(4, "dataset-chart")
    _import_progress(window, shooter, demo)
    _requests_and_tasks(window, shooter)
    window.show_screen("history")
    if chosen:
        window.history.show_dataset(chosen)
    window.history.verify()
    wait_until(lambda: window.history.report is not None, 60)
    shooter.shot(9, "history-verify")
    window.show_screen("settings")
    shooter.shot(12, "settings")
    location = _first(names, "location.points")
    if location and location.startswith("location."):
        window.open_dataset(location)
        window.dataset.tabs.setCurrentWidget(window.dataset.map_tab)
        wait_until(lambda: window.dataset.scatter().stack.currentIndex() == 1, 60)
        shooter.shot(13, "location-map")
        window.dataset.tabs.setCurrentIndex(0)
        shooter.shot(14, "dataset-records")
    if demo is not None:
        window.lock()
        first_run(window, shooter, demo)


def first_run(window: MainWindow, shooter: Shooter, demo: DemoFolder) -> None:
    """Welcome, create (a passphrase typed, meter showing) and the recovery code, in a new
    throwaway folder beside the demo vault."""
    session = window.session
    vault_folder, session.folder = session.folder, demo.root / "new-vault"
    window.show_start()
    shooter.shot(15, "welcome")
    window.first_run.show_create()
    fields = window.first_run.fields
    fields.passphrase.setText("juniper kettle orbit 42")
    fields.confirm.setText("juniper kettle orbit 42")
    shooter.shot(16, "create-vault")
    window.first_run.create_vault_button.click()
    wait_until(lambda: window.first_run.pages.currentIndex() == 2, 60)
    shooter.shot(17, "recovery-code")
    vault = window.first_run.pending_vault
    if vault is not None:
        vault.close()
    session.folder = vault_folder


def _requests_and_tasks(window: MainWindow, shooter: Shooter) -> None:
    """The inbox, one request, its approval, the training it starts, consents and rewards."""
    window.show_screen("requests")
    screen = window.requests
    screen.open_first()
    shooter.shot(6, "requests")
    from app.gui.demo_exchange import REQUESTS

    waiting = [r for r in screen.rows if r["status"] == "pending"]
    sleep_study = next((r for r in waiting if r["purpose"] == REQUESTS[0]["purpose"]), None)
    sleep_study = sleep_study or (waiting[0] if waiting else None)
    if sleep_study is not None:
        screen.table.selectRow(screen.rows.index(sleep_study))
    shooter.shot(7, "request-detail")
    if sleep_study is not None:
        from app.gui.approve_dialog import ApproveDialog
        from vault import consent as vc

        vault = window.session.require()
        request = vc.get_request(vault, sleep_study["id"]).request
        dialog = ApproveDialog(request, {d["name"] for d in vault.datasets()}, window)
        dialog.show()
        shooter.shot(18, "approve-dialog", dialog)
        dialog.accept()
        screen.approve(sleep_study["id"], *dialog.choices())
        window.show_screen("tasks")
        window.tasks.run_now()
        wait_until(lambda: window.tasks.worker is None, 180)
    window.show_screen("consents")
    shooter.shot(8, "consents")
    window.show_screen("tasks")
    shooter.shot(10, "tasks")
    window.show_screen("rewards")
    window.rewards.verify()
    wait_until(lambda: window.rewards.report is not None, 60)
    shooter.shot(11, "rewards")


def _import_progress(window: MainWindow, shooter: Shooter, demo: DemoFolder | None) -> None:
    """A real import of a year of minute-by-minute heart rate, caught mid-way, then cancelled."""
    if demo is None:
        return
    from app.gui.demo_data import write_health_export

    big = write_health_export(demo.inputs / "export-full-year.xml", days=365, heart_every=1)
    window.show_screen("data")
    dialog = window.import_file(big, start=True)
    if dialog is None:
        return
    wait_until(lambda: dialog.fraction() >= 0.3 or dialog.worker is None, 120)
    shooter.shot(5, "import-progress", dialog)
    dialog.cancel()
    wait_until(lambda: dialog.worker is None, 120)
    dialog.accept()
