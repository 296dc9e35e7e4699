"""diffusion policy: ``config`` (light) and ``model`` (torch)."""
