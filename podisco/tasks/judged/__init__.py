"""The LLM-judged tasks: MT-Bench-style chat, AlpacaEval-style alpaca, TL;DR summaries."""
