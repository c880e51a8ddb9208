"""Neurons at a chip's precision: integer membrane and current, the chip's decays, its range."""
