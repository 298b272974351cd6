"""One module per `loopchat` command group, each an `add_parser(subparsers)` beside its `cmd_*`.

run: prepare, serve and train in one command; serve: the API server; model: `model prepare`;
train: training rounds; bench: benchmarks; keys: API keys; policy: policy versions;
openapi: the HTTP API's schema; export: feedback as JSONL; simulate: simulated users.
"""
