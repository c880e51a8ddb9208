"""Compressing weights: learnable codebooks (CAT), their initialisation, exact 1-D k-means, BatchNorm folding."""
