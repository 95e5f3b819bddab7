"""The search's operators: the semantic filter, the activation buckets, random and mutated prompts, the seeds."""
