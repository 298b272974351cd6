"""Votes: thumbs on replies, A-vs-B comparisons, their export and statistics."""
