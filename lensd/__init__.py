"""lensd: a job-tracking daemon and query library for many model fits."""
