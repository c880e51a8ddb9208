"""The whole path as one call (wrap, fine-tune, prune, freeze, evaluate, check, export) and its report."""
