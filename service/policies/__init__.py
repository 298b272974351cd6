"""Policy versions in the running server: which are loaded, which serves."""
