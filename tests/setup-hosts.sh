#!/usr/bin/env bash
# What the SSH/adb, board, report and data tests need beyond pip: OpenSSH's server, the adb client,
# mmdebstrap and qemu-user-static for the arm64 board (built on first use by tests/armboard.py), Chromium
# (the report is opened in a real headless browser), Fashion-MNIST's idx files, and a "device"
# Python with onnxruntime (no torch) that the tests' plain device user can run. Needs root;
# elsewhere it says so and those tests skip with the same reason.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
    echo "setup-hosts: not root; the SSH/adb device tests will skip" >&2
    exit 0
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server adb iproute2 python3-venv chromium dataset-fashion-mnist \
    mmdebstrap qemu-user-static binfmt-support >/dev/null
# The arm64 board (tests/armboard.py) runs aarch64 binaries through qemu by binfmt_misc.
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 || echo "setup-hosts: qemu-aarch64 not registered; the arm64 board tests will skip" >&2
dev=${NASCTL_DEVICE_PYTHON:-/opt/nasctl-device/bin/python}
if ! "$dev" -c "import onnxruntime" 2>/dev/null; then
    venv=$(dirname "$(dirname "$dev")")
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q onnxruntime numpy
fi
