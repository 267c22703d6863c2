"""Process runtime: user errors, interrupts, the launcher watch, the run-dir lock."""
