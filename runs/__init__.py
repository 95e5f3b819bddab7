"""A run's life outside the search itself: opening its folder, planning sweeps of many runs."""
