"""embedding-gateway: OpenAI, Cohere, Jina, TEI and vLLM embedding and rerank APIs over
in-process engines (`adapters/`).

    cli.py, __main__.py  argv -> Settings -> `serve` (uvicorn) or `embed` (bulk/)
    engines.py           the adapter behind `--engine`, the model registry built on it
    app.py, workers.py   the ASGI app (lifespan, middleware order, routes); worker processes
    api/                 one module per dialect: request and response shapes, handlers
    batches/             OpenAI's Files and Batches API, run on the serving layer
    bulk/                `embedding-gateway embed`: a file of documents, no server
    serving/             embedding and ranking jobs, inputs, costs, admission, models, cache
    http/                ASGI middleware and transport: ids and logs, drain, auth, body limits
    config               Settings: every option, its flag, environment variable and default
    state.py, errors.py  the typed lifespan state; the one error type and its bodies
    metrics.py           Prometheus metrics; hardware.py: memory and core counts
"""
