#!/bin/bash
# Map the bucket to a v1 database/retention policy so InfluxQL queries (the InfluxQL
# dashboards, `tplr-metrics check` with INFLUXDB_API=v1) reach it. Runs once, after setup,
# with the influx CLI already configured with the admin token.
set -euo pipefail

if ! influx v1 dbrp create \
  --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
  --db "${DOCKER_INFLUXDB_INIT_BUCKET}" \
  --rp autogen \
  --default \
  --org "${DOCKER_INFLUXDB_INIT_ORG}"; then
  # Newer 2.x versions map every bucket by name already (a "virtual" mapping): that is enough.
  influx v1 dbrp list --db "${DOCKER_INFLUXDB_INIT_BUCKET}" --org "${DOCKER_INFLUXDB_INIT_ORG}" \
    | grep -q "${DOCKER_INFLUXDB_INIT_BUCKET_ID}"
fi
