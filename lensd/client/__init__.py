"""The job side: the socket client and the fit-writing API (connect, connect_sync)."""
