"""Worker processes that run compute with hard deadlines, apart from the server's process."""

from service.workers.outcomes import RemoteTraceback, WorkerError
from service.workers.pool import WorkerPool
from service.workers.processes import start_forkserver

__all__ = ["RemoteTraceback", "WorkerError", "WorkerPool", "start_forkserver"]
