"""Chat: the ChatService (no FastAPI here), engines and streaming."""
