"""Demo workers for the shipped plugins: one SDK worker per plugin, answering every command it declares.

They stand in for the real plugins so the broker, routing and chains can be exercised end to
end. Each answer is computed from the request's parameters (identifiers derived from inputs,
counts from their content), never a constant, and arrives after a short, configurable delay
so concurrency and timeouts behave as with real work. Commands the shipped chains depend on
return the fields those chains read (``jira:prepare`` → ``issueKey``, ``jira:pr`` →
``pullRequestUrl``, ``create-tenant`` → ``tenantId``, ...).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Callable, Iterable, Mapping

from arbiter.project.model import Plugin
from arbiter.sdk.worker import CommandError, Worker

Params = Mapping[str, Any]
Producer = Callable[[str, str, Params], dict[str, Any]]


def _digest(*parts: Any, length: int = 8) -> str:
    """A stable short id from the inputs, so equal requests get equal answers."""
    text = "|".join(str(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _number(*parts: Any, modulo: int = 1000) -> int:
    return int(_digest(*parts), 16) % modulo


def _require(params: Params, name: str) -> Any:
    if params.get(name) in (None, ""):
        raise CommandError("BAD_PARAMETERS", f"parameter '{name}' is required")
    return params[name]


def _issue_key(params: Params) -> str:
    return str(_require(params, "issueKey")).upper()


def jira_prepare(plugin: str, command: str, params: Params) -> dict[str, Any]:
    key = _issue_key(params)
    subtasks = [f"{key}-{step}" for step in ("analyse", "implement", "test")]
    return {"issueKey": key, "status": "prepared", "subtasks": subtasks, "branch": f"feature/{key.lower()}"}


def jira_work(plugin: str, command: str, params: Params) -> dict[str, Any]:
    key = _issue_key(params)
    return {"issueKey": key, "status": "completed", "commits": 1 + _number(key, modulo=7)}


def jira_pr(plugin: str, command: str, params: Params) -> dict[str, Any]:
    key = _issue_key(params)
    project = key.split("-")[0].lower()
    return {"issueKey": key, "pullRequestUrl": f"https://git.example.com/{project}/pulls/{100 + _number(key)}"}


def jira_docs(plugin: str, command: str, params: Params) -> dict[str, Any]:
    target = params.get("prUrl") or params.get("issueKey") or "unknown"
    return {"documented": str(target), "pages": 1 + _number(target, modulo=5)}


def create_tenant(plugin: str, command: str, params: Params) -> dict[str, Any]:
    tenant = str(_require(params, "tenantId"))
    return {"tenantId": tenant, "status": "created", "database": f"tenant_{_digest(tenant)}"}


def configure_keycloak(plugin: str, command: str, params: Params) -> dict[str, Any]:
    tenant = str(_require(params, "tenantId"))
    return {"tenantId": tenant, "realmId": f"realm-{tenant}-{_digest(tenant, 'realm', length=6)}"}


def deploy_tenant_resources(plugin: str, command: str, params: Params) -> dict[str, Any]:
    tenant = str(_require(params, "tenantId"))
    kinds = ("namespace", "database", "bucket")
    created = [f"{kind}/{tenant}-{_digest(tenant, kind, length=4)}" for kind in kinds]
    return {"tenantId": tenant, "createdResources": created}


def undo(plugin: str, command: str, params: Params) -> dict[str, Any]:
    """Compensations: report what was removed, named by whichever identifier was passed."""
    removed = params.get("resourceIds") or params.get("realmId") or params.get("tenantId")
    if removed in (None, "", []):
        raise CommandError("BAD_PARAMETERS", f"{command} needs the identifier of what to remove")
    items = list(removed) if isinstance(removed, (list, tuple)) else [removed]
    return {"removed": [str(i) for i in items], "status": "removed"}


def analyze(plugin: str, command: str, params: Params) -> dict[str, Any]:
    """A small report whose numbers follow from the target, so two targets differ."""
    named = (params.get(key) for key in ("directory", "documentPath", "path", "target"))
    target = str(next((value for value in named if value), "."))
    files = 3 + _number(plugin, command, target, modulo=40)
    findings = [
        {"severity": level, "count": _number(target, level, modulo=count)}
        for level, count in (("high", 3), ("medium", 6), ("low", 10))
    ]
    score = 100 - sum(f["count"] * weight for f, weight in zip(findings, (10, 3, 1)))
    return {"target": target, "filesAnalysed": files, "findings": findings, "score": max(score, 0)}


def security_scan(plugin: str, command: str, params: Params) -> dict[str, Any]:
    scope = str(params.get("scope") or params.get("severity") or "all")
    vulnerabilities = {level: _number(scope, level, modulo=4) for level in ("critical", "high", "medium")}
    return {"scope": scope, "vulnerabilities": vulnerabilities, "passed": vulnerabilities["critical"] == 0}


def build_image(plugin: str, command: str, params: Params) -> dict[str, Any]:
    tag = str(params.get("tag") or "latest")
    return {"image": f"registry.example.com/app:{tag}", "digest": f"sha256:{_digest(tag, length=16)}"}


def deploy(plugin: str, command: str, params: Params) -> dict[str, Any]:
    namespace = str(params.get("namespace") or "default")
    replicas = 3 if namespace == "production" else 1
    return {"namespace": namespace, "deployment": f"app-{_digest(namespace, length=5)}", "replicas": replicas}


def generic(plugin: str, command: str, params: Params) -> dict[str, Any]:
    """Any other command: an acknowledgement that names what it did with which inputs."""
    return {
        "plugin": plugin,
        "command": command,
        "parameters": sorted(params),
        "artifact": f"{command.split(':')[-1]}-{_digest(plugin, command, sorted(params.items()), length=10)}",
        "status": "done",
    }


SPECIFIC: dict[str, Producer] = {
    "prepare": jira_prepare,
    "work": jira_work,
    "pr": jira_pr,
    "docs": jira_docs,
    "create-tenant": create_tenant,
    "configure-keycloak": configure_keycloak,
    "deploy-tenant-resources": deploy_tenant_resources,
    "delete-tenant": undo,
    "remove-keycloak-config": undo,
    "destroy-tenant-resources": undo,
    "security-scan": security_scan,
    "run-security-scan": security_scan,
    "build-docker-image": build_image,
    "deploy-kubernetes": deploy,
}


def producer_for(command: str) -> Producer:
    bare = command.split(":")[-1]
    if bare in SPECIFIC:
        return SPECIFIC[bare]
    return analyze if bare.startswith("analyze") else generic


def plugin_worker(plugin: Plugin, endpoint: str, *, delay: float = 0.02, credit: int = 1, **options: Any) -> Worker:
    """A worker for ``plugin`` with one handler per declared command (or, for a plugin without
    commands, per skill or agent: what the broker asks such a plugin to run)."""
    worker = Worker(endpoint, plugin.name, credit=credit, **options)
    for component in plugin.invocable:
        worker.command(component.name)(_handler(plugin.name, component.name, delay))
    return worker


def _handler(plugin: str, command: str, delay: float) -> Callable[[dict[str, Any], dict[str, Any]], Any]:
    produce = producer_for(command)

    def handle(parameters: dict[str, Any], envelope: dict[str, Any]) -> dict[str, Any]:
        if delay > 0:
            time.sleep(delay)
        return produce(plugin, command, parameters)

    handle.__name__ = f"{plugin}:{command}"
    return handle


def demo_workers(plugins: Iterable[Plugin], endpoint: str, **options: Any) -> list[Worker]:
    return [plugin_worker(plugin, endpoint, **options) for plugin in plugins]
