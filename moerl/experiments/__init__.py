"""User-facing experiment plumbing: run directories, the trainer families behind ``moerl train``."""
