#!/bin/sh
# install-chromium.sh installs Debian's chromium for the graftkv browser test
# (kv/e2e), which renders the status page in headless Chromium. It does
# nothing if a Chromium is already installed, and installs only when run as
# root on a system with apt-get; otherwise it says what to do and fails.
set -eu

for b in chromium chromium-browser google-chrome google-chrome-stable headless-shell; do
	if command -v "$b" >/dev/null 2>&1; then
		echo "install-chromium: $b is already installed: $(command -v "$b")"
		exit 0
	fi
done

if [ "$(id -u)" -ne 0 ]; then
	echo "install-chromium: chromium is missing and this is not root; install it with: sudo apt-get install -y chromium" >&2
	exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "install-chromium: chromium is missing and there is no apt-get; install Chromium with your package manager" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y chromium
if ! command -v chromium >/dev/null 2>&1; then
	echo "install-chromium: apt-get installed chromium, but there is no chromium command in PATH" >&2
	exit 1
fi
echo "install-chromium: installed $(command -v chromium)"
