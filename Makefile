# dvit-edge: each pipeline stage is a make target and a `dvit` subcommand.
# `make demo` runs the main job on the embedded default (Fashion-MNIST); `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DVIT := $(VENV)/bin/dvit
STAMP := $(VENV)/.stamp-setup
# A workstation whose TensorRT lives in the system site-packages: `make setup SYSTEM_SITE_PACKAGES=1` lets the venv see it.
# (A Jetson never runs `make setup`: it installs the device side only, `.[device]`; README, "What a device needs".)
SYSTEM_SITE_PACKAGES ?= 0
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
RUNS ?= runs

.PHONY: setup link-tensorrt-rtx data test-tools test test-all demo student teacher train export precision reference engines build-engine validate plugin-pass latency deploy report pipeline plugins bench lint typecheck clean help

help:
	@echo "make setup     virtual environment with pinned dependencies, and the Fashion-MNIST data"
	@echo "make demo      the whole job on Fashion-MNIST: distil, export, precision, plugin, engines, validate, latency, report"
	@echo "make test      the test suite (GPU tests skip, saying why, where no GPU is present)"
	@echo "make teacher   retrain the shipped dense teacher checkpoint"
	@echo "make pipeline  distil, then export, precision (FP16, INT8, per-stage mix), the plugin pass and validate (PyTorch)"
	@echo "make engines   TensorRT engines of the plugin graph sets (TARGET=desktop-rtx here; a profile in targets/)"
	@echo "make reference record PyTorch's outputs on the test split (REFERENCE=runs/reference.npz validates against it)"
	@echo "make plugins   build the CUDA kernel and the TensorRT plugin library"
	@echo "make bench     benchmarks (speed targets live here, never in timed tests)"

setup: $(STAMP) data

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(if $(filter 1,$(SYSTEM_SITE_PACKAGES)),--system-site-packages) $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(MAKE) --no-print-directory link-tensorrt-rtx
	touch $(STAMP)

# The workstation set. On x86-64 Linux it includes TensorRT for RTX, a real TensorRT builder that needs no GPU to
# build engines ahead of time (the tests build every engine with it). A Jetson installs `.[device]` instead.
EXTRAS ?= train,export,dev$(if $(filter x86_64,$(shell uname -m)),$(comma)tensorrt-rtx)
comma := ,

# TensorRT-RTX's ONNX parser dlopens libtensorrt_rtx.so by its unversioned name when it meets a plugin node; the
# wheel ships only libtensorrt_rtx.so.1, and without the link the process aborts. The link sits beside the library.
link-tensorrt-rtx:
	@$(PY) -c "import importlib.util, pathlib; s = importlib.util.find_spec('tensorrt_rtx_libs'); \
	d = pathlib.Path(s.submodule_search_locations[0]) if s else None; \
	l = d / 'libtensorrt_rtx.so' if d else None; \
	(l.is_symlink() or l.exists() or l.symlink_to('libtensorrt_rtx.so.1')) if d and (d / 'libtensorrt_rtx.so.1').exists() else None"

data:
	@if [ -f "$(FMNIST_DIR)/train-images-idx3-ubyte.gz" ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "Fashion-MNIST not found in $(FMNIST_DIR): run 'sudo apt-get install dataset-fashion-mnist', or pass FMNIST_DIR=<dir with the four idx.gz files>"; exit 1; \
	fi

# What the tests drive for real: headless Chromium (the report), an OpenSSH server and rsync (deploy). Installed where
# apt is available as root; elsewhere the tests that need them skip and say why.
TEST_TOOLS = chromium:chromium sshd:openssh-server rsync:rsync ssh:openssh-client
test-tools:
	@missing=""; for t in $(TEST_TOOLS); do \
		command -v $${t%%:*} >/dev/null || [ -x /usr/sbin/$${t%%:*} ] || missing="$$missing $${t#*:}"; \
	done; \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else \
		echo "not installed:$$missing (the tests that need them skip; install them to run those tests)"; \
	fi

test: setup test-tools
	$(PY) -m pytest -q -m "not slow"

test-all: setup test-tools
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check pipeline tests

typecheck: setup
	$(VENV)/bin/mypy pipeline

# The shipped teacher: `make teacher` retrains it (about 30-40 min on 2 CPU cores) and replaces the checkpoint.
TEACHER_CKPT ?= checkpoints/fmnist_tiny_teacher.pt
TEACHER_THREADS ?= 2
TEACHER_ARGS ?= --mode teacher --model fmnist_tiny --epochs 15 --batch-size 128 --lr 1e-3 --weight-decay 0.05 --warmup-epochs 1 --label-smoothing 0.1 --seed 0 --threads $(TEACHER_THREADS)
teacher: setup
	$(DVIT) train $(TEACHER_ARGS) --out $(RUNS)/teacher
	mkdir -p checkpoints && cp $(RUNS)/teacher/model.pt $(TEACHER_CKPT).tmp && mv $(TEACHER_CKPT).tmp $(TEACHER_CKPT)
	cp $(RUNS)/teacher/metrics.json checkpoints/fmnist_tiny_teacher.metrics.json

# The main job on the embedded default: distil DynamicViT (rho=0.7) from the shipped teacher, then evaluate both.
# --backbone-lr-scale 0.1, not the paper's 0.01: with 4 epochs instead of the paper's 30, the backbone must adapt
# faster (measured: after 200 steps the student was 1.45 points below its teacher at 0.1 and 5.9 points at 0.01).
STUDENT_CKPT ?= $(RUNS)/student/model.pt
STUDENT_ARGS ?= --mode student --model fmnist_tiny --keep-ratio 0.7 --epochs 4 --batch-size 128 --lr 1e-3 --backbone-lr-scale 0.1 --warmup-epochs 0.5 --seed 0
student: setup
	$(DVIT) train $(STUDENT_ARGS) --teacher $(TEACHER_CKPT) --out $(RUNS)/student
	$(DVIT) evaluate $(TEACHER_CKPT) $(STUDENT_CKPT) --json $(RUNS)/evaluate.json

train: student

# Spatial sparsification (T-PAMI DynamicViT) on the embedded default: SPATIAL_MODEL=convnext-fmnist or swin-fmnist,
# Fashion-MNIST resized to 64x64. teacher-spatial trains the dense teacher with `make teacher`'s budget; student-spatial
# distils the student (rho 0.7) from it with `make student`'s budget, the official objective (ratio weight 10) and
# backbone rate (0.2 x lr), then prints both test top-1 and the FLOPs of one image's inference pass.
SPATIAL_MODEL ?= convnext-fmnist
SPATIAL_TEACHER_CKPT ?= $(RUNS)/$(SPATIAL_MODEL)-teacher/model.pt
SPATIAL_STUDENT_CKPT ?= $(RUNS)/$(SPATIAL_MODEL)-student/model.pt
SPATIAL_TEACHER_ARGS ?= --mode teacher --model $(SPATIAL_MODEL) --epochs 15 --batch-size 128 --lr 1e-3 --weight-decay 0.05 --warmup-epochs 1 --label-smoothing 0.1 --seed 0 --threads $(TEACHER_THREADS)
SPATIAL_STUDENT_ARGS ?= --mode student --model $(SPATIAL_MODEL) --keep-ratio 0.7 --epochs 4 --batch-size 128 --lr 1e-3 --warmup-epochs 0.5 --seed 0
.PHONY: teacher-spatial student-spatial
teacher-spatial: setup
	$(DVIT) train $(SPATIAL_TEACHER_ARGS) --out $(dir $(SPATIAL_TEACHER_CKPT))
student-spatial: setup
	@[ -f $(SPATIAL_TEACHER_CKPT) ] || $(MAKE) --no-print-directory teacher-spatial
	$(DVIT) train $(SPATIAL_STUDENT_ARGS) --teacher $(SPATIAL_TEACHER_CKPT) --out $(dir $(SPATIAL_STUDENT_CKPT))
	$(PY) -c "from pipeline.checkpoint import load_model, read_checkpoint; from pipeline.measure import count_flops; \
	t, s = ((read_checkpoint(p)['metrics']['test_top1'], count_flops(load_model(p))) for p in ('$(SPATIAL_TEACHER_CKPT)', '$(SPATIAL_STUDENT_CKPT)')); \
	print(f'$(SPATIAL_MODEL): teacher top-1 {t[0]:.2f}% at {t[1] / 1e6:.2f} MFLOPs, student top-1 {s[0]:.2f}% at {s[1] / 1e6:.2f} MFLOPs, FLOPs ratio {s[1] / t[1]:.3f}')"

# The whole job on the embedded default: distil, export, precision variants, plugin pass, engines, validation against
# the recorded PyTorch reference, latency, the report (its path printed last).
demo: setup
	$(MAKE) --no-print-directory student export precision plugin-pass reference engines
	$(MAKE) --no-print-directory validate REFERENCE=$(RUNS)/reference.npz VALIDATE_JOBS=2
	$(MAKE) --no-print-directory latency report
	@echo "report: $(RUNS)/report/report.html"

# Later stages, each reading the previous stage's manifest.
PRECISIONS ?= fp16 int8 fp16,int8,int8,fp16
export: setup
	$(DVIT) export --checkpoint $(STUDENT_CKPT) --teacher $(TEACHER_CKPT) --batch-sizes 1,8 --out $(RUNS)/export --overwrite
	$(DVIT) scan $(RUNS)/export/b*/*.onnx

precision: setup
	for p in $(PRECISIONS); do \
		$(DVIT) precision --graphs $(RUNS)/export --precision $$p --out $(RUNS)/precision-$${p//,/-} --overwrite || exit 1; \
	done

# The PyTorch reference recorded once on the test split (images and outputs): `make validate REFERENCE=...` and a
# device without torch validate against it and get the same figures as against PyTorch.
REFERENCE ?= pytorch
reference: setup
	$(DVIT) reference --graphs $(RUNS)/export --threads 1 --out $(RUNS)/reference.npz

GRAPH_SETS = export $(foreach p,$(PRECISIONS),precision-$(subst $(comma),-,$(p))) plugin $(foreach p,$(PRECISIONS),plugin-$(subst $(comma),-,$(p)))
VALIDATE_JOBS ?= 1
validate: setup
	printf '%s\n' $(GRAPH_SETS) | xargs -P $(VALIDATE_JOBS) -I{} sh -c '$(DVIT) validate --graphs $(RUNS)/{} \
		--reference $(REFERENCE) --threads 1 --require auto --no-progress \
		--json $(RUNS)/validate-{}$(if $(filter-out pytorch $(RUNS)/reference.npz,$(REFERENCE)),-recorded).json \
		> $(RUNS)/validate-{}.log 2>&1 || { cat $(RUNS)/validate-{}.log; exit 255; }'
	@for g in $(GRAPH_SETS); do grep -A3 "^Top-1" $(RUNS)/validate-$$g.log | head -4; done
	@if $(PY) -c "import sys; from pipeline.backend.tensorrt.cuda import gpu_available; sys.exit(0 if gpu_available()[0] else 1)" 2>/dev/null; then \
		for g in $(ENGINE_SETS); do $(DVIT) validate --graphs $(RUNS)/engines-$$g --reference $(REFERENCE) --require auto \
			--no-progress --json $(RUNS)/validate-engines-$$g.json || exit 1; done; \
	else echo "engines not validated: no GPU on this machine (they are built; ONNX Runtime validated their graphs)"; fi

# TensorRT engines of the plugin graph sets for a target (TensorRT-RTX's desktop-rtx here; `make engines
# TARGET=orin-nano` on a Jetson), beside their layer reports, with the engine cache in artifacts/engine-cache.
ENGINE_SETS ?= plugin plugin-fp16 plugin-int8 plugin-fp16-int8-int8-fp16
ENGINE_TARGET ?= $(or $(TARGET),desktop-rtx)
engines build-engine: setup
	$(MAKE) --no-print-directory plugins TARGET=$(ENGINE_TARGET)
	for g in $(ENGINE_SETS); do \
		$(DVIT) build --graphs $(RUNS)/$$g --target $(ENGINE_TARGET) --out $(RUNS)/engines-$$g \
			--plugin-lib $(PLUGINS_BUILD)/libdvit_trt_plugins.so --overwrite --no-progress || exit 1; \
	done

# The plugin pass on every graph set: the export's and each precision's.
plugin-pass: setup
	$(DVIT) plugin-pass --graphs $(RUNS)/export --out $(RUNS)/plugin --overwrite
	for p in $(PRECISIONS); do \
		$(DVIT) plugin-pass --graphs $(RUNS)/precision-$${p//,/-} --out $(RUNS)/plugin-$${p//,/-} --overwrite || exit 1; \
	done

# Pruned against dense, stage chain against fused, interleaved in one process (ONNX Runtime here; --backend tensorrt
# on engine sets where a GPU is present).
LATENCY_SETS ?= export
latency: setup
	$(DVIT) latency $(foreach g,$(LATENCY_SETS),--graphs $(RUNS)/$(g)) --batch-sizes 1,8 --threads 2 --no-progress \
		--json $(RUNS)/latency.json

# Ship a graph set to a device, build and validate there, bring the report back:
#   make deploy HOST=user@jetson TARGET=orin-nano [GRAPHS=runs/precision-fp16-int8-int8-fp16]
GRAPHS ?= $(RUNS)/export
deploy: setup
	@[ -n "$(HOST)" ] && [ -n "$(TARGET)" ] || { echo "make deploy needs HOST=user@host and TARGET=<profile> ('dvit targets' lists them)"; exit 2; }
	$(DVIT) deploy --graphs $(GRAPHS) --target $(TARGET) --host $(HOST) \
		$(if $(wildcard $(RUNS)/reference.npz),--reference $(RUNS)/reference.npz)

# One self-contained page from what validate (and latency, build) wrote.
report: setup
	$(DVIT) report --validation $(RUNS)/validate-export.json $(filter-out $(RUNS)/validate-export.json,$(wildcard $(RUNS)/validate-*.json)) \
		$(if $(wildcard $(RUNS)/latency*.json),--latency $(wildcard $(RUNS)/latency*.json)) \
		$(if $(wildcard $(RUNS)/reference.npz),--reference $(RUNS)/reference.npz) --out $(RUNS)/report

# demo, then every ONNX stage on its output
pipeline: student export precision plugin-pass validate

# The keep-ratio trade-off curve (DeiT-S at 224, random weights): latency against keep ratio, pruned vs dense,
# chain and fused, batch 1 and 32, interleaved; JSON and SVG under benchmarks/results/. ONNX Runtime's thread pools
# side by side (global, no-spin, per-session; each alone in its process). The streamed loader's throughput, the
# training data path's memory against dataset size. Then the plugin kernel's benchmark (says so and exits 0
# without a GPU).
bench: setup
	$(PY) benchmarks/bench_tradeoff.py
	$(PY) benchmarks/bench_ort_pools.py
	$(PY) benchmarks/bench_model_zoo.py
	$(PY) benchmarks/bench_loader.py
	$(PY) benchmarks/bench_train_memory.py
	$(MAKE) --no-print-directory bench-plugins

clean:
	rm -rf build $(RUNS)

# >>> plugins (owned by plugins/)
# `make plugins`: CUDA kernel library always, TensorRT plugin libraries when TensorRT (>= 10) headers are found.
#   TARGET=<profile in targets/>   the profile is the one source of what CMake knows about the device
#     (`python -m pipeline.targets --cmake-args TARGET`): its CUDA architectures and, on a Jetson, its JetPack's CUDA;
#     CMake stops when nvcc is newer than that (e.g. CUDA 13 for an Orin on JetPack 6). Without TARGET: desktop GPU
#     architectures (those nvcc lacks dropped), no driver check.
#   JETPACK=<version>   the JetPack the Jetson runs (default: the oldest its profile lists)
#   NVCC=<nvcc> (on the command line; a new build directory also takes $CUDACXX)
#   CUDA_ARCHS="87" (overrides the profile's)   DVIT_ALLOW_NEWER_CUDA=ON (the device has cuda-compat)
#   TENSORRT_ROOT=<prefix with include/>   PLUGINS_CMAKE_ARGS=<more -D options>
# `make bench-plugins`: times the kernel against torch.topk + gather (needs a CUDA GPU; says so and exits 0 without).
PLUGINS_BUILD ?= build/plugins
PLUGINS_JOBS ?= 2
TARGET ?=
JETPACK ?=
CUDA_ARCHS ?=
DVIT_ALLOW_NEWER_CUDA ?= OFF
PLUGINS_CMAKE_ARGS ?=
# TensorRT headers: the system's where TensorRT is installed (JetPack: /usr/include/aarch64-linux-gnu); on this
# project's machines the public 11.1 headers beside the clone (TensorRT-RTX's registry has TensorRT 11's layout).
TENSORRT_ROOT ?= $(firstword $(wildcard ../shared/tensorrt-oss/v11.1))
# pipeline.targets needs only the standard library: a device without the venv reads the profile with python3.
PLUGINS_PY = $(if $(wildcard $(PY)),$(PY),$(PYTHON))
# Without TARGET, what an earlier TARGET left in the build directory's cache is forgotten.
PLUGINS_NO_PROFILE = -UCMAKE_CUDA_ARCHITECTURES -DDVIT_PROFILE= -DDVIT_DEVICE_CUDA= -DDVIT_DEVICE_JETPACK=
.PHONY: bench-plugins

# The profile's options are read in the recipe, so that an unknown TARGET stops here with the profile reader's line.
plugins:
	$(if $(and $(JETPACK),$(if $(TARGET),,1)),$(error JETPACK=$(JETPACK) needs TARGET=<profile> ('dvit targets' lists them)))
	@profile="$(if $(TARGET),$$($(PLUGINS_PY) -m pipeline.targets --cmake-args $(TARGET) $(if $(JETPACK),--jetpack $(JETPACK))),$(PLUGINS_NO_PROFILE))" \
		|| exit 1; \
	set -- cmake -S plugins -B $(PLUGINS_BUILD) -DCMAKE_BUILD_TYPE=Release $$profile \
		$(if $(CUDA_ARCHS),"-DCMAKE_CUDA_ARCHITECTURES=$(CUDA_ARCHS)") $(if $(filter command line,$(origin NVCC)),-DCMAKE_CUDA_COMPILER=$(NVCC)) \
		-DDVIT_ALLOW_NEWER_CUDA=$(DVIT_ALLOW_NEWER_CUDA) $(if $(TENSORRT_ROOT),-DTENSORRT_ROOT=$(TENSORRT_ROOT)) \
		$(PLUGINS_CMAKE_ARGS); \
	printf "%q " "$$@"; echo; "$$@"
	cmake --build $(PLUGINS_BUILD) -j $(PLUGINS_JOBS)

bench-plugins: plugins $(STAMP)
	$(PY) benchmarks/bench_topk_gather.py --lib $(PLUGINS_BUILD)/libdvit_topk_gather_kernel.so
# <<< plugins
