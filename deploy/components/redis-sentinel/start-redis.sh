#!/bin/sh
# Start redis-server as master (pod 0, when no sentinel names a master yet) or as a replica of the master the
# sentinels name. AOF on, noeviction: the bot's keys (incidents, dedup markers, queues) must never be evicted.
set -eu
SVC=incident-bot-redis-ha
ME="$(hostname).${SVC}"
MASTER=""
for i in 0 1 2; do
  MASTER=$(redis-cli -h "${SVC}-${i}.${SVC}" -p 26379 -a "$REDIS_PASSWORD" --no-auth-warning \
    sentinel get-master-addr-by-name llm-bot 2>/dev/null | head -n1 || true)
  [ -n "$MASTER" ] && break
done
[ -z "$MASTER" ] && [ "$(hostname)" != "${SVC}-0" ] && MASTER="${SVC}-0.${SVC}"
set -- --port 6379 --dir /data --appendonly yes --appendfsync everysec --maxmemory-policy noeviction \
  --requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD" --replica-announce-ip "$ME" \
  --min-replicas-to-write 0
if [ -n "$MASTER" ] && [ "$MASTER" != "$ME" ]; then
  set -- "$@" --replicaof "$MASTER" 6379
fi
exec redis-server "$@"
