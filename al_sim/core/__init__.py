"""The AL core: the loop, the labelled pool, the oracle, training and metrics."""
