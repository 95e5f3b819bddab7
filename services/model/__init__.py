"""The subject model: loading it (a hub name, a folder, or the bundled Gemma), measuring a neuron, gradients."""
