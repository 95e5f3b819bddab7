"""Evidence on what a neuron does that a researcher can check, beside its top prompts.

peak_tokens.py counts the tokens a neuron peaks on (and those right before) over a set of records,
from the records alone; logit_effects.py reads from the subject model's weights what the neuron
writes, the tokens its output promotes and suppresses; run_evidence.py keeps what needs the model
in a run's evidence.json when a search ends; evidence_block.py (no model, no torch) reads that file
and assembles results.json's `evidence` block.
"""
