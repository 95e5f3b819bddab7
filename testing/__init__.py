"""What the tests and benchmarks build for themselves: a tiny random GPT-2 and embedder, scripted LLM answers, tiny settings."""
