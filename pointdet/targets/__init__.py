"""Target builders: pure functions from ground truth (and geometry) to training targets."""
