"""embedding-gateway: the HTTP edge (OpenAI, Cohere and Jina wire formats)."""
