"""Building and running experiments from a validated config; the sweep's Hydra callback."""
