#!/usr/bin/env bash
# Debian packages the test suite uses as real peers and linters:
#   curl        a real HTTP client
#   prometheus  a real Prometheus, and promtool (checks metrics and rules)
#   openssl     a real TLS server (s_server) that refuses old protocol versions
#   tinyproxy   a real egress proxy (CONNECT tunnels to Chert)
#   iproute2    network namespaces, for a real link to Chert (tests/netns.py)
#   redis-server  a real Redis, the shared idempotency store of two gateways
# In CI (CI=true) a package that cannot be installed fails the run; on a
# developer's machine without root it is a warning, and the tests that need
# it skip.
set -euo pipefail

need=()
command -v curl >/dev/null || need+=(curl)
{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || need+=(prometheus)
command -v openssl >/dev/null || need+=(openssl)
command -v tinyproxy >/dev/null || test -x /usr/bin/tinyproxy || need+=(tinyproxy)
command -v ip >/dev/null || test -x /usr/sbin/ip || need+=(iproute2)
command -v redis-server >/dev/null || test -x /usr/bin/redis-server || need+=(redis-server)
[ ${#need[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo -n"
echo "installing Debian packages: ${need[*]}"
if command -v apt-get >/dev/null \
    && $sudo apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; then
    exit 0
fi
if [ "${CI:-}" = "true" ]; then
    echo "could not install ${need[*]}, which CI requires" >&2
    exit 1
fi
echo "warning: could not install ${need[*]}; the tests that need them will skip" >&2
