"""Job functions and GPU scheduling (one worker per GPU)."""
