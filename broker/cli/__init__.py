"""The `broker` command line: serve, keys, node, demo, bench."""
