#!/usr/bin/env bash
# Debian's nginx, for the benchmark's third path (`make bench`).
set -euo pipefail
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo -n"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
