# graft — common tasks. `make test` is the test command CI runs.
GO ?= go
FUZZTIME ?= 10s

.PHONY: test test-short vet lint proto proto-check fuzz fuzz-long example

# -timeout: go test's default of 10 minutes per package is too short for
# the container tests (deploy/dockertest) on a loaded 2-core machine.
test:
	$(GO) test -race -count=1 -timeout 20m ./...

test-short:
	$(GO) test -short -count=1 ./...

vet:
	$(GO) vet ./...

lint: vet
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

proto:
	scripts/genproto.sh

proto-check:
	scripts/genproto.sh --check

# fuzz runs every fuzz target for FUZZTIME each: a duration or a count such
# as 30000x (CI uses 30000x; `make fuzz-long` runs 10m each).
fuzz:
	scripts/fuzz.sh $(FUZZTIME)

fuzz-long:
	scripts/fuzz.sh 10m

example:
	$(GO) run ./cmd/graft-example

.PHONY: image test-docker
IMAGE ?= graftkv:latest

# image builds $(IMAGE) (graftkv + graftctl, FROM scratch) without pulling anything.
image:
	GO=$(GO) deploy/build-image.sh $(IMAGE)

# test-docker runs the multi-host container tests alone, with their report (make test runs them too).
test-docker:
	$(GO) test -count=1 -v ./deploy/dockertest

.PHONY: soak
SOAK ?= 30m
SOAK_SEEDS ?= 0
# soak runs every fault scenario (faults/; make test runs each once) over new seeds and prints
# scenario / runs / violations / lost writes / unavailability.
soak:
	faults/soak.sh $(SOAK) $(SOAK_SEEDS)
