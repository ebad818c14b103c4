"""lensd: a job-tracking daemon and query library for many model fits.

Jobs write through ``connect``/``connect_sync``; analysis reads through ``Aggregator`` (a database
file) or ``AsyncAggregator`` (the daemon's socket). See docs/ for the contract.
"""

from lensd import errors
from lensd._version import __version__
from lensd.aggregator import Aggregator, AsyncAggregator
from lensd.instance import Instance
from lensd.jobs import connect, connect_sync
from lensd.samples import Sample, Samples
from lensd.store import Fit

__all__ = [
    "Aggregator",
    "AsyncAggregator",
    "Fit",
    "Instance",
    "Sample",
    "Samples",
    "__version__",
    "connect",
    "connect_sync",
    "errors",
]
