"""The IMDb positive-sentiment task (docs/paper.md, IMDb): reward vs KL to the reference."""
