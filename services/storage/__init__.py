"""What a run keeps on disk: the record store and the run's folder (lock, settings, opening and closing)."""
