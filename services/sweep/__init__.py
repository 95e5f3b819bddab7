"""Sweeps of a layer: many neuron searches that share their measurements and run on Ray."""
