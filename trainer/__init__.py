"""loopchat trainer: iterated online RLHF rounds (filled in by the trainer issue)."""
