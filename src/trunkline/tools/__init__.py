"""Tools built on a running Trunkline (the CLI's ``compare``): clients of the server, not parts of it."""
