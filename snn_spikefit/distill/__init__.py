"""Membrane-aware distillation (MD-SNN): a quantized or pruned student learns from a full-precision teacher."""
