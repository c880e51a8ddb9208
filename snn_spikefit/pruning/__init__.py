"""Structured pruning: channel importance (FSC, SVS, SCA, L1, Taylor), channel surgery, the prune verb."""
