"""The daemon: one process that owns the database and serves jobs and readers on a socket."""
