#!/bin/sh
# Write a sentinel config (Sentinel rewrites it, so it lives on the pod's volume) and start redis-sentinel
# watching llm-bot: quorum 2 of 3, down after 5 s, failover timeout 30 s.
set -eu
SVC=incident-bot-redis-ha
CONF=/data/sentinel.conf
if [ ! -f "$CONF" ]; then
  cat > "$CONF" <<CONF
port 26379
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $(hostname).${SVC}
requirepass ${REDIS_PASSWORD}
sentinel monitor llm-bot ${SVC}-0.${SVC} 6379 2
sentinel auth-pass llm-bot ${REDIS_PASSWORD}
sentinel sentinel-pass ${REDIS_PASSWORD}
sentinel down-after-milliseconds llm-bot 5000
sentinel failover-timeout llm-bot 30000
sentinel parallel-syncs llm-bot 1
CONF
fi
exec redis-sentinel "$CONF"
