"""loopchat serving side: chat API, feedback, engines, storage."""
