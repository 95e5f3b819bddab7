"""Explaining a neuron from a finished search, and scoring the explanation on prompts it never saw.

examples.py splits a run's records into what the explainer LLM sees and held-out prompts, and
formats an example the way delphi does; explainer.py asks the LLM for a one-sentence explanation;
scoring.py scores it by detection (does the LLM, given only the explanation, tell held-out high
prompts from low ones) and by generation (do prompts written from the explanation make the neuron
fire), each beside a control explanation that shows what chance looks like. structured.py is the
one way all of them ask an LLM for JSON.
"""
