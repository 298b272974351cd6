"""loopchat trainer: iterated online RLHF rounds on the votes in the store.

It stands on `store` only; it never imports the service (they meet at the database, the
artifact directory and one HTTP notify).
"""
