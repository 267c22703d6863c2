"""The AL loop, its events and callbacks, the labelled pool, the simulated oracle, training."""
