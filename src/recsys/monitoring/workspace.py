"""The local Evidently workspace: every run's snapshots, so ``evidently ui`` shows history.

One project (``DriftConfig.workspace_project``, default "recsys drift") holds all runs. Each
snapshot is tagged with its check name; the project dashboard gets one line panel per metric
series (drift score of each column per check, latency percentiles per stage, embedding drift,
quality metrics), added the first time the series appears, in one tab per check. Browse with::

    evidently ui --workspace experiments/reports/workspace
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.monitoring.checks import CheckResult, metric_results

if TYPE_CHECKING:
    from evidently.ui.workspace import Workspace

DEFAULT_WORKSPACE = Path("experiments/reports/workspace")

_TAB_TITLES = {
    "data": "Data drift (events)",
    "context": "Request context",
    "prediction": "Prediction drift",
    "embedding": "Embedding drift",
    "quality": "Recommendation quality",
    "latency": "Latency",
}


def _project(workspace: Workspace, name: str) -> Any:
    found = [p for p in workspace.search_project(name) if p.name == name]
    if found:
        return found[0]
    return workspace.create_project(
        name, description="Scheduled drift reports of the recsys event and decision logs."
    )


def _panels(check: CheckResult) -> list[tuple[str, str, dict[str, str]]]:
    """(title, metric type, labels) of the series a check's snapshot holds."""
    out: list[tuple[str, str, dict[str, str]]] = []
    assert check.snapshot is not None
    for metric, _, _ in metric_results(check.snapshot):
        kind = type(metric).__name__
        if kind == "ValueDrift":
            out.append(
                (
                    f"{check.name}: {metric.column} ({metric.method})",
                    kind,
                    {"column": metric.column},
                )
            )
        elif kind == "DriftedColumnsCount":
            out.append((f"{check.name}: drifted columns", kind, {}))
        elif kind == "QuantileValue":
            stage = metric.column.removeprefix("latency_")
            out.append(
                (
                    f"latency: {stage} p{metric.quantile * 100:g} (ms)",
                    kind,
                    {"column": metric.column, "quantile": str(metric.quantile)},
                )
            )
        elif kind == "EmbeddingsDrift":
            out.append(("embedding: user vectors drift score", kind, {}))
        elif kind in ("Personalization", "Novelty", "Diversity", "PopularityBiasMetric"):
            out.append((f"quality: {kind}", kind, {}))
    return out


def add_runs(
    path: str | Path,
    checks: list[CheckResult],
    project_name: str,
    run_name: str,
) -> dict[str, Any]:
    """Add the snapshots of one run to the workspace at ``path`` (created if missing).

    Args:
        path: Workspace folder.
        checks: Checks of the run; those with a snapshot are added.
        project_name: The project to add to (created with a dashboard if missing).
        run_name: Name of the run (its timestamp); each snapshot is ``<run_name> <check>``.

    Returns:
        ``{"path", "project_id", "snapshots": {check: snapshot id}, "panels_added"}``.
    """
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel
    from evidently.ui.workspace import Workspace

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    workspace = Workspace(str(folder))
    project = _project(workspace, project_name)
    dashboard = workspace.get_dashboard(project.id)
    titles = {panel.title for panel in dashboard.panels}
    snapshots: dict[str, str] = {}
    added = 0
    for check in checks:
        if check.snapshot is None:
            continue
        ref = workspace.add_run(project.id, check.snapshot, name=f"{run_name} {check.name}")
        snapshots[check.name] = str(ref.id)
        for title, kind, labels in _panels(check):
            if title in titles:
                continue
            panel = line_plot_panel(
                title,
                [PanelMetric(legend=title, tags=[check.name], metric=kind, metric_labels=labels)],
                size="half",
            )
            project.dashboard.add_panel(panel, tab=_TAB_TITLES.get(check.name, check.name))
            titles.add(title)
            added += 1
    return {
        "path": str(folder),
        "project_id": str(project.id),
        "snapshots": snapshots,
        "panels_added": added,
    }
