#!/usr/bin/env bash
# Make sure what the tests and the demo need is installed and running:
#   redis-server (running on 127.0.0.1:6379), redis-sentinel, prometheus + promtool, prometheus-alertmanager, kubectl (>= 1.27;
#   tests/deploy fail without it, naming what to install: bookworm's kubernetes-client 1.20 is too old).
# Prometheus and Alertmanager are started by the tests themselves, on free loopback ports.
# Usage: scripts/services.sh [--redis-only]
set -euo pipefail

need=()
command -v redis-server >/dev/null || need+=(redis-server)
# tests/storage/test_sentinel.py starts a Sentinel group of its own
command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
if [[ "${1:-}" != "--redis-only" ]]; then
  command -v prometheus >/dev/null || need+=(prometheus)
  command -v promtool >/dev/null || need+=(prometheus)
  command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null || need+=(prometheus-alertmanager)
fi
if ((${#need[@]})); then
  echo "services: installing ${need[*]} (apt-get)"
  sudo_cmd=""
  [[ $(id -u) -eq 0 ]] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "services: starting redis-server on 127.0.0.1:6379"
  mkdir -p /tmp/incident-bot-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/incident-bot-redis --logfile /tmp/incident-bot-redis/redis.log
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { echo "services: redis did not start" >&2; exit 1; }
echo "services: redis $(redis-server --version | awk '{print $3}'), prometheus $(command -v prometheus >/dev/null && prometheus --version 2>&1 | awk 'NR==1{print $3}'), alertmanager $( (command -v prometheus-alertmanager || command -v alertmanager) >/dev/null && { prometheus-alertmanager --version 2>&1 || alertmanager --version 2>&1; } | awk 'NR==1{print $3}'), kubectl $(command -v kubectl >/dev/null && echo present || echo absent)"
