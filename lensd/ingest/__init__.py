"""PyAutoFit output folders: finding fits on disk, reading them into records, the ingest run."""
