#!/usr/bin/env bash
# What the SSH/adb, report and data tests need beyond pip: OpenSSH's server, the adb client, Chromium
# (the report is opened in a real headless browser), Fashion-MNIST's idx files, and a "device"
# Python with onnxruntime (no torch) that the tests' plain device user can run. Needs root;
# elsewhere it says so and those tests skip with the same reason.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
    echo "setup-hosts: not root; the SSH/adb device tests will skip" >&2
    exit 0
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server adb iproute2 python3-venv chromium dataset-fashion-mnist >/dev/null
dev=${NASCTL_DEVICE_PYTHON:-/opt/nasctl-device/bin/python}
if ! "$dev" -c "import onnxruntime" 2>/dev/null; then
    venv=$(dirname "$(dirname "$dev")")
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q onnxruntime numpy
fi
