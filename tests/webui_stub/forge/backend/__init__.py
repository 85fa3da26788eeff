"""Stand-in for Forge 2.x's ``backend`` package (tests only)."""
