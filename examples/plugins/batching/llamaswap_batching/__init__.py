"""The ``batching`` scheduler plugin for llamaswap."""

from llamaswap_batching.factory import BatchingSchedulerFactory, batching
from llamaswap_batching.scheduler import BatchingScheduler

__all__ = ["BatchingScheduler", "BatchingSchedulerFactory", "batching"]
