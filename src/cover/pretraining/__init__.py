"""Pretraining: the datasets, view pairs, method step, held-out endpoint error and collapse statistic, on the engine."""
