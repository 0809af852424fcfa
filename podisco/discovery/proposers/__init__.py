"""Where candidate losses come from: the Proposer protocol, the LLM, evolve and replay proposers."""
