"""The broker's gRPC shell: decode, call the core, persist, encode."""
