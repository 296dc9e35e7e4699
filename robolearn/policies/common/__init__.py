"""Building blocks shared by the policies. Light at import: torch modules live in submodules."""
