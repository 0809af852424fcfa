"""LLM-driven objective discovery: proposers, static gate, sandbox, archive, executors, loop."""
