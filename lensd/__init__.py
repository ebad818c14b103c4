"""lensd: a job-tracking daemon and query library for many model fits.

Jobs write through ``connect``/``connect_sync``; analysis reads through ``Aggregator`` (a database
file) or ``AsyncAggregator`` (the daemon's socket). See docs/ for the contract.

The public names are loaded on first use (PEP 562 ``__getattr__``): ``import lensd`` and the CLI
start without numpy, sqlite or the query compiler, which a job pays for on every start
(docs/performance.md). ``from lensd import Fit`` works as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

from lensd import errors
from lensd._version import __version__

if TYPE_CHECKING:
    from lensd.aggregator import Aggregator, AsyncAggregator
    from lensd.client.jobs import connect
    from lensd.client.sync import connect_sync
    from lensd.domain.instance import Instance
    from lensd.domain.samples import Sample, Samples
    from lensd.store.reader import Fit, ProgressPoint

# public name -> the module that defines it; classes report themselves by the public name (lensd.Fit)
_LAZY: Final = {
    "Aggregator": "lensd.aggregator",
    "AsyncAggregator": "lensd.aggregator",
    "Fit": "lensd.store.reader",
    "Instance": "lensd.domain.instance",
    "ProgressPoint": "lensd.store.reader",
    "Sample": "lensd.domain.samples",
    "Samples": "lensd.domain.samples",
    "connect": "lensd.client.jobs",
    "connect_sync": "lensd.client.sync",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module the first time the name is used, then keep the name here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lensd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    if isinstance(value, type):
        value.__module__ = "lensd"  # e.g. repr and help() say lensd.Fit
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "Aggregator",
    "AsyncAggregator",
    "Fit",
    "Instance",
    "ProgressPoint",
    "Sample",
    "Samples",
    "__version__",
    "connect",
    "connect_sync",
    "errors",
]
