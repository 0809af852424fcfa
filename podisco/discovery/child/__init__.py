"""CHILD ONLY: imported only inside the sandboxed worker process; the parent never imports this package."""
