"""podisco losses inside other training libraries.

``podisco.integrations.trl``: ``PodiscoDPOTrainer``, TRL 1.16's ``DPOTrainer`` with any podisco loss (needs the
``[trl]`` extra). ``podisco.integrations.dpo_hook``: the loss hook it uses, free of TRL and podisco imports, which
``podisco export --format trl`` copies into a stand-alone file. Importing this package imports neither.
"""
