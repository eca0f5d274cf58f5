"""``cover benchmark``: baselines and COVER under one budget on built-in and user tasks."""
