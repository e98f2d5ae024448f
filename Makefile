# opskit — see README.md. Every target works on a fresh Debian machine with Go.
DAEMONS := collector transfer judge alarm ratelimit configd deployer deploy filefly abtest
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X github.com/opskit/opskit/internal/buildinfo.Version=$(VERSION) \
           -X github.com/opskit/opskit/internal/buildinfo.Commit=$(COMMIT)

.PHONY: build demo test deps vet fmt-check bench clean

## build: compile every daemon into bin/
build:
	@mkdir -p bin
	go build -ldflags "$(LDFLAGS)" -o bin/ $(addprefix ./,$(DAEMONS)) ./internal/tools/kfake

## demo: build, then run the pipeline of finished daemons on this machine (Ctrl-C stops it)
demo: build
	scripts/demo.sh

## test: install test services if missing, vet, check formatting, run every test
test: deps vet fmt-check
	scripts/test.sh

deps:
	scripts/install-test-deps.sh

vet:
	go vet ./...

fmt-check:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

## bench: run every benchmark script under bench/ (figures go to bench/RESULTS.md by hand)
bench: build
	@set -e; for s in bench/*.sh; do [ -x "$$s" ] || continue; echo "== $$s"; "$$s"; done

clean:
	rm -rf bin
