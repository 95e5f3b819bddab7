"""What runs and sweeps keep on disk: the record store, a run's folder (paths, ids, run.json, lock), a sweep's folder and shared table."""
