# The two commands a new user needs, on a fresh Debian 12 machine (as root, or with sudo):
#   make demo   - the main job on the embedded default: local Glance + generated demo image
#   make test   - the test suite against real parts (Glance, qemu-img)
# Both install what they need first, and do nothing more when it is already installed.

SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
INVOKE := $(VENV)/bin/invoke
# Debian's python3 (not a pyenv one): the hivex bindings come from Debian and only load into it.
BASE_PYTHON := /usr/bin/python3
# qemu-system-common: qemu-storage-daemon (exposes a partition of an image over FUSE, no root or loop device);
# ntfs-3g: mkntfs and the NTFS mount; python3-hivex: the registry bindings (linked into the venv below).
# qemu-system-x86, ovmf, swtpm: the install-from-media VM (UEFI, Secure Boot, TPM 2.0).
# libfaketime: freezes ntfs-3g's clock at the build epoch, so a bake is bit-for-bit reproducible.
# rsync: gitlab-ci-local copies the project with it before running the generated pipeline.
# The rest builds the tests' stand-in install ISO (a Debian kernel + busybox playing Windows Setup) that
# boots under SeaBIOS (isolinux) and OVMF (a signed unified kernel image in an El Torito FAT image).
APT_PACKAGES := python3-venv qemu-utils fdisk qemu-system-common fuse3 ntfs-3g python3-hivex libhivex-bin \
	qemu-system-x86 ovmf swtpm swtpm-tools \
	libfaketime rsync \
	xorriso mtools isolinux syslinux-common systemd-boot-efi busybox-static sbsigntool grub-pc-bin
# CI also runs the slow tier's check that real tools accept the fixtures: libguestfs inspection
# (virt-inspector) needs its appliance, which supermin builds from the host's kernel; and the
# production-shaped cloud (tests/test_production_cloud.py, `invoke cloud-up --production-shaped`) runs
# Keystone and Glance on a private mariadbd (started by the tests, never as a system service); and the release
# notes and family pages are rendered by a real browser (Debian's chromium, driven by Playwright) in the tests.
CI_APT_PACKAGES := $(if $(CI),libguestfs-tools linux-image-amd64 mariadb-server chromium,)
# The whole suite takes about 45 minutes on 2 cores: `make test` runs the fast tier on a developer's machine, in
# FAST_WORKERS pytest workers, a test file each at a time (about 10 minutes on 2 cores), and everything where CI is
# set (.ci/run sets it), one test at a time: the slow tier's TCG boots have timeouts that assume a core each.
# `make test-all` runs everything anywhere.
FAST_WORKERS ?= 2
PYTEST_ARGS ?= $(if $(CI),,-m "not slow" -n $(FAST_WORKERS) --dist loadfile)

# gitlab-ci-local runs the generated .gitlab-ci.yml in the tests. 4.65.1 is the newest release that runs on
# Node.js 20 (later ones use Node 22's Set methods); Debian 12's own nodejs (18) and npm also do.
GITLAB_CI_LOCAL_VERSION := 4.65.1
GITLAB_CI_LOCAL := $(VENV)/node/node_modules/.bin/gitlab-ci-local

.PHONY: test test-all demo bench deps apt venv node clean

test: deps
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-all: deps
	$(VENV)/bin/pytest

demo: deps
	$(INVOKE) demo

bench: deps
	$(PYTHON) benchmarks/bench_measure.py
	$(PYTHON) benchmarks/bench_publish.py
	$(PYTHON) benchmarks/bench_bake.py
	$(PYTHON) benchmarks/bench_cache.py
	$(PYTHON) benchmarks/bench_import.py
	$(PYTHON) benchmarks/bench_wipe.py

deps: apt venv node

# $(call apt_install,PACKAGES,WHY,APT-GET OPTIONS): install those of PACKAGES that are not installed yet.
define apt_install
	@missing=$$(for p in $(1); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages$(2):" $$missing; \
	    sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	    $$sudo apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $(3) $$missing >/dev/null; \
	fi
endef

apt:
	$(call apt_install,$(APT_PACKAGES),,--no-install-recommends)
	$(call apt_install,$(CI_APT_PACKAGES), for CI's slow tier,)

venv: $(VENV)/.installed

node: $(GITLAB_CI_LOCAL)

$(GITLAB_CI_LOCAL):
	@if ! command -v npm >/dev/null; then \
	    echo "installing Debian packages for gitlab-ci-local: nodejs npm"; \
	    sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	    $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; \
	fi
	npm install --silent --no-audit --no-fund --prefix $(VENV)/node gitlab-ci-local@$(GITLAB_CI_LOCAL_VERSION)
	@touch $@

$(VENV)/.installed: pyproject.toml
	@test -x $(PYTHON) || $(BASE_PYTHON) -m venv $(VENV)
	$(PYTHON) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PYTHON) -m pip install -q --disable-pip-version-check -e '.[test]'
	@# The PyPI package called hivex is something else entirely: link Debian's bindings in instead.
	@site=$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("purelib"))'); \
	for f in /usr/lib/python3/dist-packages/hivex /usr/lib/python3/dist-packages/libhivexmod.cpython-311-*.so; do \
	    ln -sfn $$f $$site/; done; \
	$(PYTHON) -c 'import hivex' || { echo "hivex bindings not loadable: install python3-hivex"; exit 1; }
	@touch $@

clean:
	-$(INVOKE) glance-down 2>/dev/null
	rm -rf $(VENV) .bakery .pytest_cache
