"""A sweep's `--neurons` spec. A sweep runs in runs/ (sweep_plan, sweep_scheduler, sweep_worker); its files are services/storage/'s."""
