"""lensd: a job-tracking daemon and query library for many model fits.

Jobs write through ``connect``/``connect_sync``; analysis reads through ``Aggregator`` (a database
file) or ``AsyncAggregator`` (the daemon's socket). See docs/ for the contract.
"""

from lensd import errors
from lensd._version import __version__
from lensd.aggregator import Aggregator, AsyncAggregator
from lensd.client.jobs import connect, connect_sync
from lensd.domain.instance import Instance
from lensd.domain.samples import Sample, Samples
from lensd.store.reader import Fit

for _public in (Aggregator, AsyncAggregator, Fit, Instance, Sample, Samples):
    _public.__module__ = "lensd"  # each reports itself by its public name, e.g. lensd.Fit
del _public

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
