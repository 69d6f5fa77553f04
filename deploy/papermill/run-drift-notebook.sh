#!/usr/bin/env bash
# The JupyterLab route: execute notebooks/08_drift_monitoring.ipynb with papermill on a
# schedule. The executed copy (the Evidently report embedded, what moved, the plots) lands in
# experiments/reports/notebooks/08_drift_monitoring-<UTC timestamp>.ipynb; open it in JupyterLab.
#
# Schedule it with cron, e.g. every day at 06:30:
#   30 6 * * * /opt/recsys/deploy/papermill/run-drift-notebook.sh >> /opt/recsys/var/log/drift-notebook.log 2>&1
# With FAIL_ON_DRIFT=True the notebook raises when drift is found, so papermill exits non-zero
# on drift as on errors (papermill cannot tell them apart; `recsys drift` can: 1 vs 2).
set -euo pipefail
ROOT="${RECSYS_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
cd "$ROOT"
PAPERMILL="${PAPERMILL:-$ROOT/.venv/bin/papermill}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p experiments/reports/notebooks
exec "$PAPERMILL" notebooks/08_drift_monitoring.ipynb \
  "experiments/reports/notebooks/08_drift_monitoring-$STAMP.ipynb" \
  --cwd notebooks \
  -p LOG_DIR "${LOG_DIR:-$ROOT/var/log}" \
  -p REFERENCE_WINDOW "${REFERENCE_WINDOW:-now-14d..now-7d}" \
  -p CURRENT_WINDOW "${CURRENT_WINDOW:-last-7d}" \
  -p OUT_DIR "$ROOT/experiments/reports/drift" \
  -p WORKSPACE "$ROOT/experiments/reports/workspace" \
  -p FAIL_ON_DRIFT True
