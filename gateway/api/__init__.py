"""The wire: one module per dialect, each with its request and response shapes and handlers.

wire.py      how shapes are declared and parsed; JSON Schemas for /openapi.json
context.py   what a handler hands the serving layer from its request
openai.py    /v1/embeddings, /v1/models[/{id}]
cohere.py    /v1/embed, /v2/embed
rerank.py    /rerank, /v1/rerank, /v2/rerank (Cohere, Jina)
tei.py       TEI: /embed, /rerank with `texts`, /similarity, /tokenize, /decode, /info, /
vllm.py      vLLM's /score, /tokenize with `prompt`, /detokenize
texts.py     /embed with `texts`
probes.py    /health, /ready, /metrics
openapi.py   /openapi.json, assembled from the declarations
routes.py    the ROUTES list (imported by gateway.app alone)
"""
