"""lensd: a job-tracking daemon and query library for many model fits."""
__version__ = "0.1.0"
