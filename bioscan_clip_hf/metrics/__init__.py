"""`evaluate` metric modules shipped with the package (load them by path, offline)."""
