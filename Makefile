# clusterwall — the two commands a newcomer runs (as root on Debian):
#   make demo   the seed's scenario end to end in the lab
#   make test   gofmt, go vet, the macOS/Windows cross-compile, and every test (race detector on)
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
BIN := bin/clusterwall

.PHONY: all build deps test-deps test demo fmt vet cross crds bench ha-bench fuzz clean install soak

all: build

deps:
	@scripts/deps.sh

# What only the tests need: headless Chromium (the dashboard's browser test)
# and a real kube-apiserver + etcd built from the Go module proxy for the
# controller's tests (cached in /var/cache/clusterwall/k8s-bins).
test-deps:
	@scripts/deps.sh --test
	@scripts/k8s-test-bins.sh >/dev/null

build:
	$(GO) build -o $(BIN) ./cmd/clusterwall

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# The offline commands (explain, policy validate, import, export, az-style
# edits, logs, suggest) run where users are: clusterwall must build (and its
# tests type-check) for macOS and Windows; the Linux-only commands there
# say that they need Linux.
CROSS ?= darwin/arm64 darwin/amd64 windows/amd64
cross:
	@set -e; for t in $(CROSS); do \
	  echo "== GOOS=$${t%/*} GOARCH=$${t#*/} go build ./cmd/clusterwall && go vet ./cmd/clusterwall"; \
	  GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) build -o /dev/null ./cmd/clusterwall; \
	  GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) vet ./cmd/clusterwall; \
	done

test: test-deps fmt vet cross
	KUBEBUILDER_ASSETS="$$(scripts/k8s-test-bins.sh)" $(GO) test -race -count=1 -timeout 20m ./...
	# The whole CRS regression suite (too slow under -race; see docs/waf.md).
	$(GO) test -count=1 -run 'TestCRSRegression|TestLoadEmbedded' ./internal/waf/crstest/

demo: deps build
	@scripts/demo.sh $(BIN)

# The standing attack suite (test/soak, internal/soak; results in
# docs/benchmarks.md "Soak"): SOAK_MINUTES of DNS floods, idle connections
# overfilling the L7 proxy's limit (16,384, from 40 addresses), denied-flow
# floods and hostile admin API bodies against the real daemon in a lab,
# with normal traffic; fails on a daemon restart or < 99.9 % normal
# success. `make test` runs 2 minutes of it (with a limit of 2,048).
SOAK_MINUTES ?= 10
soak:
	@scripts/deps.sh --test
	CW_SOAK_DURATION=$(SOAK_MINUTES)m CW_SOAK_MAXCONNS=16384 $(GO) test -count=1 -timeout 0 -v -run '^TestSoak$$' ./test/soak/

# Every fuzz target for FUZZTIME each (go test -fuzz takes one at a time);
# seed corpora live in the packages' testdata/fuzz.
FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done
	# The kernel against the matcher: 20 times the CI run's random policies (root).
	CLUSTERWALL_KERNEL_DIFF=20 $(GO) test -count=1 -run '^TestKernelDifferential$$' -timeout 30m ./internal/nft/

# Regenerate the CRDs and deep-copy code from internal/apis (controller-gen).
crds:
	$(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.19.0 object paths=./internal/apis/... crd:crdVersions=v1 output:crd:dir=deploy/crds

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/match/

# 20 failovers of the HA lab pair, measured (docs/ha.md), then the same
# with the backup's conntrackd stopped (the control: streams are lost).
HA_FAILOVERS ?= 20
ha-bench:
	CW_HA_FAILOVERS=$(HA_FAILOVERS) $(GO) test -count=1 -timeout 30m -run '^TestHAFailoverMeasure$$' -v ./test/ | grep -E 'ha_measure_test|^(ok|FAIL|---)'
	CW_HA_FAILOVERS=$(HA_FAILOVERS) CW_HA_NOSYNC=1 $(GO) test -count=1 -timeout 30m -run '^TestHAFailoverMeasure$$' -v ./test/ | grep -E 'ha_measure_test|^(ok|FAIL|---)'

clean:
	rm -rf bin

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)/usr/local/bin/clusterwall
	# The systemd unit, the Grafana dashboard and the examples (docs/operations.md).
	install -D -m 0644 deploy/systemd/clusterwall.service $(DESTDIR)/etc/systemd/system/clusterwall.service
	install -D -m 0644 deploy/systemd/clusterwall-ha.conf $(DESTDIR)/usr/local/share/clusterwall/systemd/clusterwall-ha.conf
	install -D -m 0644 deploy/grafana/clusterwall.json $(DESTDIR)/usr/local/share/clusterwall/grafana/clusterwall.json
	install -D -m 0644 deploy/clusterwall.yaml $(DESTDIR)/usr/local/share/clusterwall/examples/clusterwall.yaml
	install -D -m 0644 examples/aks-egress.yaml $(DESTDIR)/usr/local/share/clusterwall/examples/aks-egress.yaml
	install -D -m 0644 examples/service-tags.json $(DESTDIR)/usr/local/share/clusterwall/examples/service-tags.json
	# Config, policy and admin token only when absent: never overwrite an operator's files.
	install -d -m 0755 $(DESTDIR)/etc/clusterwall
	test -e $(DESTDIR)/etc/clusterwall/clusterwall.yaml || install -m 0644 deploy/clusterwall.yaml $(DESTDIR)/etc/clusterwall/clusterwall.yaml
	test -e $(DESTDIR)/etc/clusterwall/admin.token || (umask 077; printf '%s admin\n' "$$(head -c 32 /dev/urandom | base64 | tr -d '=+/\n')" > $(DESTDIR)/etc/clusterwall/admin.token)
	if [ ! -e $(DESTDIR)/var/lib/clusterwall/policy.yaml ] && [ ! -e $(DESTDIR)/var/lib/private/clusterwall/policy.yaml ]; then \
		install -D -m 0640 examples/aks-egress.yaml $(DESTDIR)/var/lib/clusterwall/policy.yaml; \
		install -m 0640 examples/service-tags.json $(DESTDIR)/var/lib/clusterwall/service-tags.json; fi
	@echo "installed; edit /etc/clusterwall/clusterwall.yaml and /var/lib/clusterwall/policy.yaml, then: systemctl daemon-reload && systemctl enable --now clusterwall"
