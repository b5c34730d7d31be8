#!/usr/bin/env bash
# Debian packages that the integration tests start for real (PostgreSQL server binaries,
# Redis, Chromium for report rendering). Installs only what is missing; needs root.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)          # renders the drift report
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)  # Celery broker of the scale-out test
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "test services missing (${need[*]}); install them as root: apt-get install ${need[*]}" >&2
  exit 0
fi
echo "installing test services: ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
