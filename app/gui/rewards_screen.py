"""Rewards: the ledger of signed receipts, totals per organization, a chart over time, and
"Check receipts" (every signature, every chain, the terms of each task).
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHBoxLayout,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.gui.formatting import local_time, parse_iso, short_did
from app.gui.session import Session
from app.gui.widgets import Banner, LazyRefresh, empty_or, fill_table, label, table
from app.gui.worker import CancelledFn, ProgressFn
from identity.summary import amount_words

MIN_CHART_SPAN_S = 3600.0


def totals_text(by_organization: list[dict]) -> str:
    """'3 credits, 1.5 EUR' — totals per unit over every organization."""
    units: dict[str, float] = {}
    for row in by_organization:
        units[row["unit"]] = units.get(row["unit"], 0.0) + row["total"]
    return ", ".join(amount_words(total, unit) for unit, total in sorted(units.items())) or "0"


def cumulative(receipts: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """Per unit: (times, running totals) in time order, for the chart."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for r in sorted(receipts, key=lambda r: r["received"] or ""):
        moment = parse_iso(r["received"])
        if moment is None:
            continue
        times, totals = out.setdefault(r["unit"], ([], []))
        times.append(moment.timestamp())
        totals.append((totals[-1] if totals else 0.0) + r["amount"])
    return out


class RewardsScreen(LazyRefresh, QWidget):
    """Totals, receipts and their chart."""

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.book: dict | None = None
        self.report: dict | None = None
        self._plot = None
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(label("Rewards", "title"))
        top.addStretch(1)
        self.verify_button = QPushButton("Check receipts")
        self.verify_button.setToolTip("Check every receipt's signature, sequence and terms")
        top.addWidget(self.verify_button)
        layout.addLayout(top)
        self.total = label("", "big")
        layout.addWidget(self.total)
        self.banner = Banner()
        layout.addWidget(self.banner)
        self.organizations = table(["Organization", "Total", "Receipts"], "Totals", 0)
        self.receipts = table(
            ["Received", "Organization", "Task", "Round", "Amount"], "Receipts", 2
        )
        self.chart_box = QWidget()
        QVBoxLayout(self.chart_box).setContentsMargins(0, 0, 0, 0)
        upper = QSplitter()
        upper.addWidget(self.organizations)
        upper.addWidget(self.chart_box)
        upper.setSizes([380, 620])
        body = QSplitter(Qt.Orientation.Vertical)
        body.addWidget(upper)
        body.addWidget(self.receipts)
        self.stack = empty_or(
            body,
            "No rewards yet",
            "Each accepted round of training earns what the request promised, with a"
            " receipt signed by the organization. They are listed and totalled here.",
        )
        layout.addWidget(self.stack, 1)
        self.verify_button.clicked.connect(self.verify)
        self.follow(session, session.tasks_changed)

    def refresh(self) -> None:
        """Re-read the ledger."""
        from vault import consent as vc
        from vault import ledger as vl

        vault = self.session.vault
        if vault is None:
            return
        self.book = book = vl.ledger(vault)
        purposes = {r["id"]: r["purpose"] for r in vc.list_requests(vault)}
        self.total.setText(f"Earned: {totals_text(book['by_organization'])}")
        fill_table(
            self.organizations,
            [
                [o["name"] or short_did(o["organization"]), amount_words(o["total"], o["unit"]),
                 o["receipts"]]
                for o in book["by_organization"]
            ],
        )  # fmt: skip
        names = {o["organization"]: o["name"] for o in book["by_organization"]}

        def who(did: str) -> str:
            return names.get(did) or short_did(did)

        fill_table(
            self.receipts,
            [
                [local_time(r["received"]), who(r["organization"]),
                 purposes.get(r["request"], r["request"]), r["round"] + 1,
                 amount_words(r["amount"], r["unit"])]
                for r in reversed(book["receipts"])
            ],
        )  # fmt: skip
        self.stack.setCurrentIndex(1 if book["receipts"] else 0)
        if book["receipts"]:
            self._draw(book["receipts"])

    def _draw(self, receipts: list[dict]) -> None:
        import pyqtgraph as pg

        from app.gui.dataset_charts import styled_plot
        from app.gui.style import ACCENT

        if self._plot is None:
            self._plot = styled_plot({"bottom": pg.DateAxisItem()})
            self._plot.setAccessibleName("Rewards over time")
            self.chart_box.layout().addWidget(self._plot)
        self._plot.clear()
        moments: list[float] = []
        for unit, (times, totals) in cumulative(receipts).items():
            # A running total only moves when a receipt arrives: draw it as steps.
            self._plot.plot(times, totals, pen=pg.mkPen(ACCENT, width=2), stepMode="right",
                            symbol="o", symbolSize=6, symbolBrush=ACCENT, name=unit)  # fmt: skip
            self._plot.setLabel("left", f"total {unit}")
            moments += times
        self._plot.autoRange()
        if moments and max(moments) - min(moments) < MIN_CHART_SPAN_S:
            # receipts minutes apart would get an axis in seconds and milliseconds: show at
            # least an hour around them, so the axis reads in clock times
            middle = (max(moments) + min(moments)) / 2
            half = MIN_CHART_SPAN_S / 2
            self._plot.setXRange(middle - half, middle + half, padding=0)

    def clear(self) -> None:
        """Forget the ledger (on lock)."""
        self.book = self.report = None
        self.organizations.setRowCount(0)
        self.receipts.setRowCount(0)
        self.total.clear()
        self.banner.hide()
        self.stack.setCurrentIndex(0)

    def verify(self) -> None:
        """Check every receipt in the worker and show the result."""
        from vault import ledger as vl

        vault = self.session.require()
        self.verify_button.setEnabled(False)

        def job(progress: ProgressFn, cancelled: CancelledFn) -> dict:
            return vl.verify_ledger(vault)

        self.session.work.start(job, self._verified, self._verify_failed)

    def _verified(self, report: dict) -> None:
        self.verify_button.setEnabled(True)
        self.report = report
        if report["ok"]:
            text = f"All {report['receipts']} receipts check out: signed, in sequence, as agreed."
        else:
            text = f"{len(report['problems'])} problem(s): {report['problems'][0]}"
        self.banner.show_result(report["ok"], text)

    def _verify_failed(self, error: BaseException) -> None:
        self.verify_button.setEnabled(True)
        self.banner.show_result(False, f"The receipts could not be checked: {error}")
