"""The work behind every dialect, batch lines and bulk/, in plain values (no Starlette):
embedding and ranking jobs (embedding, ranking) under a request's guard (guard, admission),
inputs made prompts (inputs, token_ids), cost bounds (costs), vector encoding (encoding), the
served models (registry) and the vector cache (cache)."""
