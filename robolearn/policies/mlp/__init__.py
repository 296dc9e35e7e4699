"""mlp policy: ``config`` (light) and ``model`` (torch)."""
