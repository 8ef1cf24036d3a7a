# ROTA — see README.md. `make demo` and `make test` are all a newcomer needs.

GO        ?= go
FUZZTIME  ?= 10s
LONGFUZZ  ?= 5m
BENCHDIR  ?= $(CURDIR)/.bench
ARTIFACTS ?= $(CURDIR)/test-output
PKGS      := ./...

# Fuzz targets: package and name, run briefly by `make test` and long by
# `make fuzz`.
FUZZ_TARGETS := \
	./bundle:FuzzOpen \
	./bundle:FuzzVerify \
	./bundle:FuzzConfig \
	./slot:FuzzGrubEnv \
	./slot:FuzzUBootEnv \
	./slot:FuzzParseEFIVariable

.PHONY: all build test deps vet unit e2e fuzz-short fuzz bench demo demo-stop clean

all: build

build:
	$(GO) build -o bin/ ./cmd/...

deps:
	./scripts/test-deps.sh

vet:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Test artifacts (server logs, the portal's screenshots) go to $(ARTIFACTS).
unit:
	mkdir -p $(ARTIFACTS) && $(GO) test -race -count=1 -timeout 20m -artifacts -outputdir $(ARTIFACTS) $(PKGS)

# End-to-end boots under QEMU (docs/e2e.md); console logs go to $(ARTIFACTS).
e2e:
	mkdir -p $(ARTIFACTS) && ROTA_E2E=1 $(GO) test -count=1 -timeout 40m -artifacts -outputdir $(ARTIFACTS) ./internal/e2e

fuzz-short:
	@for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; name=$${t##*:}; \
	  echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done

test: deps vet unit e2e fuzz-short

fuzz:
	$(MAKE) fuzz-short FUZZTIME=$(LONGFUZZ)

bench:
	./scripts/bench.sh $(BENCHDIR)
	./scripts/bench-install.sh $(BENCHDIR)
	./scripts/bench-poll.sh
	$(GO) test -run '^$$' -bench LargeFleet -benchtime 20x ./internal/portal

demo:
	./scripts/demo.sh

demo-stop:
	./scripts/demo-stop.sh

clean:
	rm -rf bin demo $(BENCHDIR) $(ARTIFACTS)
