"""Who is calling: API keys, signed web-session cookies, the operator token, rate limits."""
