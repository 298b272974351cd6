# Two commands a newcomer needs (see README.md). Both install what is missing first.
.PHONY: run test lint bench-serve

run:
	@scripts/bootstrap.sh run
	.venv/bin/loopchat run

test:
	@scripts/bootstrap.sh test
	@scripts/test.sh

lint:
	.venv/bin/ruff check store service trainer loopchat harness tests
	.venv/bin/mypy

bench-serve:
	@scripts/bootstrap.sh run
	.venv/bin/loopchat bench serve
