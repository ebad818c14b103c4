"""Bytes: the msgpack codec with numpy arrays, the sans-IO protocol, the spool file format."""
