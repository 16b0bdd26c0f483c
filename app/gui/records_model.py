"""A table model over one dataset's records that never loads all rows.

``rowCount`` comes from the cached dataset statistics, so opening a dataset of millions of
records costs one small query. Rows are fetched a page at a time, by key on the
``records_time (dataset_id, start, id)`` index:

- scrolling down or up fetches the next page after (or before) a page we already hold, with
  ``(start, id) > (?, ?)``: no OFFSET, so it costs the same at row 10 and at row 5,000,000;
- a jump (dragging the scroll bar, End) starts from the nearest page whose first key we know,
  or from either end of the dataset, and skips the rest with a short OFFSET on the index.

Only a bounded number of pages is kept (least recently used first out).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt

from app.gui.formatting import record_time

PAGE = 256
MAX_PAGES = 64
COLUMNS = ("Time", "Ends", "Value", "Unit", "Text", "Latitude", "Longitude", "Source", "More")
_SELECT = (
    "SELECT start, end, utc_offset, value, text, unit, lat, lon, source_id, id, extra FROM records"
)
Key = tuple[float, int]
Index = QModelIndex | QPersistentModelIndex


def extra_text(extra: str | None) -> str:
    """The record's extra fields as 'key value · key value' (first few, short)."""
    if not extra:
        return ""
    try:
        fields = json.loads(extra)
    except ValueError:
        return ""
    if not isinstance(fields, dict):
        return str(fields)[:120]
    parts = []
    for key, value in list(fields.items())[:6]:
        if isinstance(value, dict | list):
            continue
        parts.append(f"{key.replace('_', ' ')} {value}")
    return " · ".join(parts)[:160]


def _number(value: float | None, digits: int | None = None) -> str:
    if value is None:
        return ""
    if digits is not None:
        return f"{value:.{digits}f}"
    return f"{value:,.6g}" if abs(value) < 1e15 else f"{value:.4g}"


class RecordsModel(QAbstractTableModel):
    """Records of one dataset in time order, paged by key."""

    def __init__(self, conn: Any, dataset_id: int, total: int, parent: Any = None) -> None:
        super().__init__(parent)
        self._conn = conn
        self._dataset = dataset_id
        self._total = total
        self._pages: OrderedDict[int, list[tuple]] = OrderedDict()
        self._first: dict[int, Key] = {}  # page -> key of its first row (kept for jumps)
        self._last: dict[int, Key] = {}  # page -> key of its last row
        self._sources = dict(conn.execute("SELECT id, name FROM sources").fetchall())
        self.queries = 0  # for tests and the benchmark: how many page queries ran

    # -- Qt model API --------------------------------------------------------------------

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # Qt API name
        """All records of the dataset (no row is loaded to know it)."""
        return 0 if parent.isValid() else self._total

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # Qt API name
        """The fixed columns."""
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(  # Qt API name
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        """Column titles."""
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        """The text of one cell, fetching its page on first use."""
        if not index.isValid():
            return None
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() in (2, 5, 6):
            return Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        if role not in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return None
        row = self.row(index.row())
        if row is None:
            return None
        start, end, offset, value, text, unit, lat, lon, source_id, _id, extra = row
        column = index.column()
        if column == 0:
            return record_time(start, offset)
        if column == 1:
            return record_time(end, offset) if end is not None and end != start else ""
        if column == 2:
            return _number(value)
        if column == 3:
            return unit or ""
        if column == 4:
            return (text or "") if role == Qt.ItemDataRole.ToolTipRole else (text or "")[:80]
        if column == 5:
            return _number(lat, 5)
        if column == 6:
            return _number(lon, 5)
        if column == 7:
            return self._sources.get(source_id, "")
        return extra_text(extra)

    # -- paging --------------------------------------------------------------------------

    def row(self, number: int) -> tuple | None:
        """The raw record at ``number`` (0 = oldest), or None past the end."""
        if not 0 <= number < self._total:
            return None
        page_number, within = divmod(number, PAGE)
        page = self._pages.get(page_number)
        if page is None:
            page = self._fetch(page_number)
            self._remember(page_number, page)
        else:
            self._pages.move_to_end(page_number)
        return page[within] if within < len(page) else None

    def _remember(self, number: int, page: list[tuple]) -> None:
        self._pages[number] = page
        if page:
            self._first[number] = (page[0][0], page[0][9])
            self._last[number] = (page[-1][0], page[-1][9])
        while len(self._pages) > MAX_PAGES:
            self._pages.popitem(last=False)

    def _size(self, number: int) -> int:
        return max(0, min(PAGE, self._total - number * PAGE))

    def _fetch(self, number: int) -> list[tuple]:
        self.queries += 1
        size = self._size(number)
        where = "WHERE dataset_id = ?"
        if number - 1 in self._last:  # the page before is known: continue after it
            key = self._last[number - 1]
            return self._forward(f"{where} AND (start, id) > (?, ?)", key, size, 0)
        if number + 1 in self._first:  # the page after is known: read back from it
            key = self._first[number + 1]
            return self._backward(f"{where} AND (start, id) < (?, ?)", key, size, 0)
        # A jump: start from the closest known key or from either end of the dataset.
        below = max((p for p in self._first if p < number), default=None)
        above = min((p for p in self._first if p > number), default=None)
        options = [(number * PAGE, "start", None)]
        options.append((self._total - number * PAGE - size, "end", None))
        if below is not None:
            options.append(((number - below) * PAGE, "below", below))
        if above is not None:
            options.append(((above - number) * PAGE - size, "above", above))
        skip, origin, anchor = min(options, key=lambda o: o[0])
        if origin == "start":
            return self._forward(where, (), size, skip)
        if origin == "end":
            return self._backward(where, (), size, skip)
        if origin == "below":
            key = self._first[anchor]
            return self._forward(f"{where} AND (start, id) >= (?, ?)", key, size, skip)
        key = self._first[anchor]
        return self._backward(f"{where} AND (start, id) < (?, ?)", key, size, skip)

    def _forward(self, where: str, key: tuple, size: int, skip: int) -> list[tuple]:
        sql = f"{_SELECT} {where} ORDER BY start, id LIMIT ? OFFSET ?"
        return self._conn.execute(sql, (self._dataset, *key, size, skip)).fetchall()

    def _backward(self, where: str, key: tuple, size: int, skip: int) -> list[tuple]:
        sql = f"{_SELECT} {where} ORDER BY start DESC, id DESC LIMIT ? OFFSET ?"
        rows = self._conn.execute(sql, (self._dataset, *key, size, skip)).fetchall()
        rows.reverse()
        return rows

    def reset(self, total: int) -> None:
        """Forget every page (the dataset changed) and take the new record count."""
        self.beginResetModel()
        self._total = total
        self._pages.clear()
        self._first.clear()
        self._last.clear()
        self._sources = dict(self._conn.execute("SELECT id, name FROM sources").fetchall())
        self.endResetModel()
