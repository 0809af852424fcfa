"""`podisco <command>`: one module per command group; nothing imports this package."""
