"""Tracking: the MLflow contract, store access, a server's reachability, retries, the server."""
