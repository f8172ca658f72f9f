#!/usr/bin/env bash
# Writes the secrets docker-compose.yml refuses to start without into .env, once: a random
# REDIS_PASSWORD, a Flower login (FLOWER_BASIC_AUTH=admin:<random>) and the gateway's metrics
# key (GATEWAY_METRICS_KEY: the gateway serves /metrics only to it; Prometheus scrapes with it).
# A value already in .env is kept. Says which it wrote; never prints a secret. Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
touch .env
chmod 600 .env
random() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }
for name in REDIS_PASSWORD FLOWER_BASIC_AUTH GATEWAY_METRICS_KEY; do
    if grep -q "^${name}=" .env; then
        echo "$name: kept (already in .env)"
        continue
    fi
    value="$(random)"
    [ "$name" = FLOWER_BASIC_AUTH ] && value="admin:$value"
    echo "${name}=${value}" >> .env
    echo "$name: written to .env (random)"
done
