"""Charts of one dataset (pyqtgraph): values per day, and a map-like scatter of locations.

Both summarise the whole dataset, which on millions of records takes seconds, so they are
computed in the worker on a second, read-only connection (the vault's WAL lets it read while the
window uses the main one) and drawn when ready. Locking interrupts the query.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.gui.session import Session
from app.gui.style import ACCENT
from app.gui.widgets import label
from app.gui.worker import CancelledFn, ProgressFn, Worker

if TYPE_CHECKING:
    from vault.core import Vault

MAX_POINTS = 40_000
# Units whose daily total means something (steps, energy, distance, time); others: the mean.
SUM_UNITS = {"count", "kcal", "cal", "kj", "km", "m", "mi", "min", "hr", "h", "s", "l", "ml"}
DAILY_SQL = """
    SELECT CAST((start + coalesce(utc_offset, 0) * 60) / 86400 AS INTEGER) AS day,
           sum(value), avg(value), min(value), max(value), count(*)
    FROM records WHERE dataset_id = ? GROUP BY day ORDER BY day"""


def read_connection(vault: Vault, cancelled: CancelledFn) -> Any:
    """A second connection to the vault for a background read; it stops when cancelled."""
    from vault.db import connect

    conn = connect(vault.folder, vault.data_key)
    # Checked every 10,000 virtual-machine steps: a lock interrupts a long scan quickly.
    conn.set_progress_handler(lambda: 1 if cancelled() else 0, 10_000)
    return conn


def daily_values(vault: Vault, dataset_id: int, cancelled: CancelledFn) -> list[tuple]:
    """[(day number, sum, mean, min, max, count)] over the record's own local days."""
    conn = read_connection(vault, cancelled)
    try:
        return conn.execute(DAILY_SQL, (dataset_id,)).fetchall()
    finally:
        conn.close()


def location_sample(
    vault: Vault, dataset_id: int, total: int, cancelled: CancelledFn
) -> list[tuple[float, float]]:
    """Up to about MAX_POINTS (lon, lat) pairs, evenly thinned by record id."""
    conn = read_connection(vault, cancelled)
    step = max(1, total // MAX_POINTS)
    try:
        return conn.execute(
            "SELECT lon, lat FROM records WHERE dataset_id = ? AND lat IS NOT NULL AND id % ? = 0",
            (dataset_id, step),
        ).fetchall()
    finally:
        conn.close()


def styled_plot(axis_items: dict | None = None) -> Any:
    """A pyqtgraph PlotWidget in the window's colours (it defaults to black)."""
    import pyqtgraph as pg

    palette = QApplication.palette()
    plot = pg.PlotWidget(axisItems=axis_items or {})
    plot.setBackground(palette.base().color())
    text = palette.text().color()
    for name in ("left", "bottom"):
        axis = plot.getAxis(name)
        axis.setPen(pg.mkPen(palette.mid().color()))
        axis.setTextPen(pg.mkPen(text))
    plot.showGrid(x=True, y=True, alpha=0.15)
    plot.setMenuEnabled(False)
    return plot


def moving_average(values: list[float], width: int = 7) -> list[float]:
    """The trailing ``width``-day mean of ``values`` (shorter at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= width:
            total -= values[i - width]
        out.append(total / min(i + 1, width))
    return out


class _Loading(QWidget):
    """A stack of 'loading', 'empty' and the plot itself."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.stack = QStackedWidget()
        self.message = label("", "empty")
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.stack.addWidget(self.message)
        QVBoxLayout(self).addWidget(self.stack)
        self.worker: Worker | None = None

    def say(self, text: str) -> None:
        """Show ``text`` instead of the plot."""
        self.message.setText(text)
        self.stack.setCurrentIndex(0)

    def stop(self) -> None:
        """Cancel a computation still running."""
        if self.worker is not None:
            self.worker.cancel()
            self.worker = None


class DailyChart(_Loading):
    """Daily totals or means of one dataset, as a line over dates."""

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        import pyqtgraph as pg

        self.session = session
        self.rows: list[tuple] = []
        self.unit = ""
        box = QWidget()
        layout = QVBoxLayout(box)
        bar = QHBoxLayout()
        self.mode = QComboBox()
        self.mode.addItems(["Daily total", "Daily average", "Records per day"])
        self.mode.setAccessibleName("What to chart")
        self.caption = QLabel()
        bar.addWidget(self.mode)
        bar.addWidget(self.caption, 1)
        layout.addLayout(bar)
        self.plot = styled_plot({"bottom": pg.DateAxisItem()})
        self.plot.setAccessibleName("Chart of daily values")
        layout.addWidget(self.plot, 1)
        self.stack.addWidget(box)
        self.mode.currentIndexChanged.connect(self._draw)

    def load(self, vault: Vault, dataset_id: int, unit: str | None, has_values: bool) -> None:
        """Compute the daily values in the worker and draw them when ready."""
        self.stop()
        self.unit = unit or ""
        self.say("Adding up the days…")
        default = 0 if (unit or "").lower() in SUM_UNITS else 1
        self.mode.blockSignals(True)
        self.mode.setCurrentIndex(default if has_values else 2)
        self.mode.blockSignals(False)
        for i in (0, 1):
            self.mode.model().item(i).setEnabled(has_values)

        def job(progress: ProgressFn, cancelled: CancelledFn) -> list[tuple]:
            return daily_values(vault, dataset_id, cancelled)

        self.worker = self.session.work.start(job, self._loaded, self._failed)

    def _loaded(self, rows: list[tuple]) -> None:
        self.worker = None
        self.rows = rows
        if not rows:
            self.say("No records to chart.")
            return
        self._draw()
        self.stack.setCurrentIndex(1)

    def _failed(self, error: BaseException) -> None:
        self.worker = None
        self.say("The chart could not be computed.")

    def _draw(self) -> None:
        import pyqtgraph as pg

        mode = self.mode.currentIndex()
        column = {0: 1, 1: 2, 2: 5}[mode]
        days = [r[0] * 86400 + 43200 for r in self.rows if r[column] is not None]
        values = [float(r[column]) for r in self.rows if r[column] is not None]
        self.plot.clear()
        color = QColor(ACCENT)
        if mode == 1:  # averages: a line (bars from zero would hide the variation)
            self.plot.plot(days, values, pen=pg.mkPen(color, width=1.5))
            if len(days) <= 400:
                self.plot.plot(days, values, pen=None, symbol="o", symbolSize=4, symbolBrush=color)
        else:  # totals and counts: a bar per day, and the weekly trend over them
            fill = QColor(color)
            fill.setAlpha(120)
            bars = pg.BarGraphItem(x=days, height=values, width=86400 * 0.8, brush=fill, pen=None)
            self.plot.addItem(bars)
            trend = pg.mkPen(QColor("#e07a2f"), width=2)
            self.plot.plot(days, moving_average(values), pen=trend, name="7-day average")
        unit = "records" if mode == 2 else self.unit
        self.plot.setLabel("left", unit)
        low = min(values) if values else 0
        self.caption.setText(
            f"  {len(days):,} days" + ("   ·   orange: 7-day average" if mode != 1 else "")
        )
        self.plot.autoRange()
        if mode != 1 and low >= 0:
            self.plot.setYRange(0, max(values) * 1.05 if values else 1, padding=0)


class LocationScatter(_Loading):
    """Location points on longitude/latitude axes: a map without map tiles."""

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)

        self.session = session
        self.plot = styled_plot()
        self.plot.setAccessibleName("Map of location points")
        # One degree of longitude is shorter than one of latitude away from the equator.
        self.plot.setAspectLocked(True)
        self.plot.setLabel("bottom", "longitude")
        self.plot.setLabel("left", "latitude")
        self.stack.addWidget(self.plot)

    def load(self, vault: Vault, dataset_id: int, total: int) -> None:
        """Sample the points in the worker and draw them when ready."""
        self.stop()
        self.say("Placing the points…")

        def job(progress: ProgressFn, cancelled: CancelledFn) -> list[tuple[float, float]]:
            return location_sample(vault, dataset_id, total, cancelled)

        self.worker = self.session.work.start(job, self._loaded, self._failed)

    def _loaded(self, points: list[tuple[float, float]]) -> None:
        import pyqtgraph as pg

        self.worker = None
        if not points:
            self.say("No positions in this dataset.")
            return
        self.plot.clear()
        color = QColor(ACCENT)
        color.setAlpha(110)
        scatter = pg.ScatterPlotItem(
            x=[p[0] for p in points],
            y=[p[1] for p in points],
            size=4,
            pen=None,
            brush=pg.mkBrush(color),
        )
        self.plot.addItem(scatter)
        self.plot.autoRange()
        self.stack.setCurrentIndex(1)

    def _failed(self, error: BaseException) -> None:
        self.worker = None
        self.say("The points could not be read.")
