"""One small worker for long work: a QRunnable on the global QThreadPool, reporting by signal.

The job is a plain function ``job(progress, cancelled)``: ``progress(done, total)`` may be
called from the worker thread (delivered to the GUI as a queued signal) and ``cancelled()``
says whether the person pressed Cancel. The outcome arrives as ``result(value)`` or
``error(exception)``, then ``finished()``. Exceptions never escape the thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

ProgressFn = Callable[[int, int], None]
CancelledFn = Callable[[], bool]
Job = Callable[[ProgressFn, CancelledFn], Any]


class WorkerSignals(QObject):
    """Signals a worker emits; they cross to the GUI thread as queued connections."""

    progress = Signal(int, int)
    result = Signal(object)
    error = Signal(object)
    finished = Signal()


class Worker(QRunnable):
    """Runs one job off the GUI thread; ``cancel()`` asks it to stop at its next check."""

    def __init__(self, job: Job) -> None:
        super().__init__()
        self.setAutoDelete(False)  # we keep a reference until `finished`, so signals stay valid
        self._job = job
        self._cancel = threading.Event()
        self.signals = WorkerSignals()
        self.running = False

    def cancel(self) -> None:
        """Ask the job to stop; it decides where it is safe to (an import rolls back)."""
        self._cancel.set()

    def cancelled(self) -> bool:
        """True once cancel() was called."""
        return self._cancel.is_set()

    def _progress(self, done: int, total: int) -> None:
        # Byte counts can exceed 32 bits: scale both into int range, keeping the ratio.
        while total > 2**31 - 1:
            done, total = done >> 8, total >> 8
        self.signals.progress.emit(int(done), int(total))

    def run(self) -> None:
        """Called by the pool in a worker thread."""
        self.running = True
        try:
            value = self._job(self._progress, self.cancelled)
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the GUI as a signal
            self.signals.error.emit(exc)
        else:
            self.signals.result.emit(value)
        finally:
            self.running = False
            self.signals.finished.emit()


class WorkQueue(QObject):
    """Starts workers and remembers the running ones, so locking can cancel and wait."""

    idle = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._running: set[Worker] = set()

    def start(
        self,
        job: Job,
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Worker:
        """Run ``job`` in the pool and wire its callbacks; return the worker (for cancel)."""
        worker = Worker(job)
        if on_result is not None:
            worker.signals.result.connect(on_result)
        if on_error is not None:
            worker.signals.error.connect(on_error)
        if on_progress is not None:
            worker.signals.progress.connect(on_progress)
        worker.signals.finished.connect(lambda: self._done(worker))
        self._running.add(worker)
        QThreadPool.globalInstance().start(worker)
        return worker

    def _done(self, worker: Worker) -> None:
        self._running.discard(worker)
        if not self._running:
            self.idle.emit()

    def busy(self) -> bool:
        """True while any worker started here has not finished."""
        return bool(self._running)

    def cancel_all(self, wait_ms: int = 10000) -> bool:
        """Cancel every running job and wait for the threads; True when all stopped."""
        for worker in list(self._running):
            worker.cancel()
        stopped = QThreadPool.globalInstance().waitForDone(wait_ms)
        if stopped:
            # Their `finished` signals are still queued; they are done all the same.
            self._running.clear()
        return stopped
