"""flow policy: ``config`` (light) and ``model`` (torch)."""
