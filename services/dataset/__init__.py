"""Real text: the corpus and the neuron's top examples in it (the baseline a found prompt is compared with)."""
