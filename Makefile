# clusterwall — the two commands a newcomer runs (as root on Debian):
#   make demo   the seed's scenario end to end in the lab
#   make test   gofmt, go vet, and every test (race detector on)
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
BIN := bin/clusterwall

.PHONY: all build deps test demo fmt vet bench fuzz clean install

all: build

deps:
	@scripts/deps.sh

build:
	$(GO) build -o $(BIN) ./cmd/clusterwall

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

test: deps fmt vet
	$(GO) test -race -count=1 -timeout 20m ./...
	# The whole CRS regression suite (too slow under -race; see docs/waf.md).
	$(GO) test -count=1 -run 'TestCRSRegression|TestLoadEmbedded' ./internal/waf/crstest/

demo: deps build
	@scripts/demo.sh $(BIN)

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/match/

clean:
	rm -rf bin

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)/usr/local/bin/clusterwall
