"""The human rendering of a routing result: facts with evidence, rules in firing order, the score
table, the decision and the agent team — what a rule author reads to understand a route."""

from __future__ import annotations

from typing import Any, Mapping

from arbiter.routing.action_view import action_json, action_line
from arbiter.routing.match import Matched, PluginScore
from arbiter.routing.pipeline import RoutingResult
from arbiter.routing.surface import written_words
from arbiter.routing.team import AgentMatch


def _ms(value: int) -> str:
    minutes = value / 60_000
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def truncation_line(cut: Mapping[str, Any] | None) -> list[str]:
    """The facts line saying routing read only the head of a long request (``textTruncated``)."""
    if not cut:
        return []
    read, chars = cut.get("readChars", 0), cut.get("chars", 0)
    return [f"  text         read the first {read:,} of {chars:,} characters (max_text_chars, configs/routing.yaml)"]


def _words(r: RoutingResult, evidence: Any) -> str:
    """Evidence as the request wrote it (never a stemmed term), each word once."""
    written = written_words(r.request.text, r.request.files)
    return ", ".join(dict.fromkeys(written(e) for e in evidence))


def facts_section(r: RoutingResult) -> list[str]:
    c = r.classification
    lines = ["Facts", *truncation_line(c.truncation())]
    if not c.domains:
        lines.append("  domains      (none)")
    for d in c.domains:
        lines.append(f"  domain       {d.name:<22} {d.score:.2f}  from: {_words(r, d.evidence)}")
    for x in c.contexts:
        lines.append(f"  context      {x.name:<22}       from: {_words(r, x.evidence)}")
    for p in c.patterns:
        lines.append(f"  pattern      {p.name:<22}       from: {_words(r, p.evidence)}")
    lines.extend(_lead_words(r))
    lines.append(f"  complexity   {c.complexity} ({c.complexity_reason})")
    lines.append(f"  urgency      {c.urgency}/10")
    lines.append(f"  duration     ~{_ms(c.estimated_duration)}")
    if c.files:
        lines.append(f"  files        {', '.join(c.files)}")
    if c.caller:
        lines.append(f"  caller       {c.caller}")
    return lines


def _lead_words(r: RoutingResult) -> list[str]:
    """Which words made the leading plugin lead: those of the main clause count fully, those of
    context phrases (for, with, from, based on, ...) at a fraction (see routing/clauses.py)."""
    lead = r.decision.primary_plugin or next(iter(r.decision.unserved), None)
    scored = next((s for s in r.classification.relevance if s.name == lead), None)
    if scored is None:
        return []
    main = [w for w in scored.evidence if w not in scored.context]
    line = f"  lead words   {lead}: {_words(r, main) or '(none)'}"
    return [line + (f"; context: {_words(r, scored.context)}" if scored.context else "")]


def rules_section(r: RoutingResult) -> list[str]:
    engine = r.evaluation.engine if r.evaluation else "-"
    lines = [f"Rules fired (in order; engine: {engine})"]
    if r.rule_error:
        lines.append(f"  ! rules were not applied: {r.rule_error}")
    firings = r.evaluation.firings if r.evaluation else ()
    if not firings:
        lines.append("  (none)")
    for n, f in enumerate(firings, 1):
        lines.append(f"  {n}. {f.rule}  [priority {f.priority}]  {f.source.path}:{f.source.line}")
        if f.reason:
            lines.append(f"     because: {f.reason}")
        for action in f.actions:
            lines.append(f"     -> {action_line(action_json(action))}")
    return lines


def scores_section(r: RoutingResult, limit: int = 8) -> list[str]:
    lines = ["Scores", f"  {'plugin':<26} {'score':>8}  matched"]
    shown = [s for s in r.scores if s.score > 0 or not s.eligible][:limit]
    if not shown:
        lines.append("  (no plugin has any evidence)")
    for s in shown:
        matched = ", ".join(_matched(r, s, m) for m in s.capabilities)
        flag = "" if s.eligible else f"  [not eligible: {s.reason}]"
        lines.append(f"  {s.plugin:<26} {s.score:>8.1f}  {matched}{flag}")
    return lines


def _matched(r: RoutingResult, s: PluginScore, m: Matched) -> str:
    """One matched item with its points; relevance says what its context-only words cost it
    (the lead factor, routing/match.py)."""
    if m.type != "relevance":
        return f"{m.type}:{m.value}(+{m.weight:.0f})"
    lead = f" x{s.lead:.2f} for context words" if s.lead < 0.995 else ""
    return f"relevance:{_words(r, m.value.split(', '))}(+{m.weight:.0f}{lead})"


def decision_section(r: RoutingResult) -> list[str]:
    d = r.decision
    lines = ["Decision"]
    if d.primary_plugin is None:
        lines.extend(no_route_lines(r))
    else:
        lines.append(f"  primary      {d.primary_plugin}")
        lines.append(f"  fallbacks    {', '.join(d.fallback_plugins) or '(none)'}")
        lines.append(f"  strategy     {d.execution_strategy}")
        if d.collaboration_plan:
            lines.append(f"  plan         (coordinator {d.collaboration_plan.coordinator})")
            for n, phase in enumerate(d.collaboration_plan.phases, 1):
                after = f" after {', '.join(phase.dependencies)}" if phase.dependencies else ""
                par = " (parallel)" if phase.parallel else ""
                lines.append(f"    {n}. {phase.domain}: {phase.plugin}{after}{par}")
        lines.append(f"  estimate     {_ms(d.estimated_duration)}, cost {d.estimated_cost:.2f}")
    for note in d.notes:
        lines.append(f"  note: {note}")
    return lines


def no_route_lines(r: RoutingResult) -> list[str]:
    """A no-route answer with the thresholds it applied and each near candidate's distance."""
    data = r.no_route() or {"thresholds": {}, "candidates": []}
    gate = data["thresholds"]
    lines = [
        "  no route: no plugin fits this request well",
        f"  thresholds   a matched declared domain, or text fit >= {gate.get('minFit')};"
        f" and score >= {gate.get('minScore')}",
    ]
    for c in data["candidates"]:
        short = [f"fit {c['fit']:.2f} ({c['fitShort']:.2f} short)" if c["fitShort"] else f"fit {c['fit']:.2f}"]
        short.append(f"score {c['score']:.1f}" + (f" ({c['scoreShort']:.1f} short)" if c["scoreShort"] else ""))
        short.append("a declared domain" if c["matchedDomain"] else "no declared domain")
        lines.append(f"  near         {c['plugin']}: {', '.join(short)}")
    if not data["candidates"]:
        lines.append("  near         (no plugin has any evidence)")
    return lines


def team_section(r: RoutingResult) -> list[str]:
    team = r.team
    lines = ["Agent team"]
    if team.coordinator:
        lines.append(f"  coordinator  {team.coordinator.agent.id}{_learned(team.coordinator)}")
    for domain, m in team.specialists:
        lines.append(f"  {domain:<12} {m.agent.id}  ({_matched_words(r, m.matched[:4])}){_learned(m)}")
    if not team.coordinator and not team.specialists:
        lines.append("  (none)")
    return lines


def _matched_words(r: RoutingResult, matched: Any) -> str:
    """An agent's matches (``keyword:rais``) with the word as the request wrote it."""
    written = written_words(r.request.text, r.request.files)
    return ", ".join(
        f"{kind}:{written(word)}" if kind in ("keyword", "word") else f"{kind}:{word}"
        for kind, _, word in (m.partition(":") for m in matched)
    )


def _learned(m: AgentMatch) -> str:
    """The learned figure that moved an agent's score, when one did."""
    if m.success_rate == 1.0:
        return ""
    return f"  score x{m.success_rate:.2f}: {m.agent.plugin}'s success rate over its recent tries"


def render(r: RoutingResult) -> str:
    sections = [facts_section(r), rules_section(r), scores_section(r), decision_section(r), team_section(r)]
    head = [f'Request {r.request.request_id}: "{_read_text(r)}"', ""]
    return "\n".join(head + ["\n".join(s) + "\n" for s in sections]).rstrip() + "\n"


HEAD_CHARS = 120  # the explain header shows this much of a longer request, then its length


def _read_text(r: RoutingResult) -> str:
    """The request in the header: a long one shows its head and its length."""
    text = r.request.text
    if len(text) <= HEAD_CHARS:
        return text
    return f"{text[:HEAD_CHARS].rstrip()}… ({len(text):,} characters)"


def dispatch_lines(outcome: Mapping[str, Any] | None) -> list[str]:
    """How the broker carried a decision out: each try, fallback, cache hit or dead letter."""
    if not outcome:
        return ["Dispatch", "  (not dispatched: decided by the command line, or still in flight)"]
    flags = [outcome.get("status", "?")]
    if outcome.get("durationMs") is not None:
        flags.append(f"{outcome['durationMs']} ms")
    if outcome.get("degraded"):
        flags.append("degraded")
    lines = [f"Dispatch ({', '.join(str(f) for f in flags)})"]
    for n, step in enumerate(outcome.get("steps") or (), 1):
        detail = f"  {step['detail']}" if step.get("detail") else ""
        retry = f"  (retry in {step['retryInMs']} ms)" if step.get("retryInMs") is not None else ""
        lines.append(f"  {n}. {step['plugin']} {step.get('command') or ''}: {step['outcome']}{detail}{retry}")
    return lines


def render_recorded(d: Mapping[str, Any]) -> str:
    """A decision read back from the state store, with what dispatch did with it."""
    head = f'Request {d["requestId"]} ({d.get("origin") or "?"}, {d["createdAt"]}): "{d.get("userInput") or ""}"'
    classification = d.get("classification") or {}
    lines = [head, "", "Facts (as recorded)", *truncation_line(classification.get("textTruncated"))]
    lines.append(f"  domains      {', '.join(classification.get('domain') or []) or '(none)'}")
    lines.append(f"  complexity   {classification.get('complexity', '?')}")
    lines += ["", "Scores (as recorded)"]
    for s in d.get("capabilityScores") or []:
        flag = "" if s.get("eligible", True) else f"  [not eligible: {s.get('reason')}]"
        lines.append(f"  {s['plugin']:<26} {s.get('score', 0):>8.1f}{flag}")
    lines += ["", "Decision"]
    lines.append(f"  primary      {d.get('primaryPlugin') or 'no route'}")
    lines.append(f"  fallbacks    {', '.join(d.get('fallbackPlugins') or []) or '(none)'}")
    lines.append(f"  rules hash   {str(d.get('rulesHash') or '')[:12]}")
    lines += [""] + dispatch_lines(d.get("outcome"))
    return "\n".join(lines) + "\n"


def compact_json(r: RoutingResult, limit: int = 5) -> dict[str, Any]:
    """The explain of one request cut to what a failing test case needs: the facts, the rules
    that fired, the best scores and the decision."""
    c, d = r.classification, r.decision
    firings = r.evaluation.firings if r.evaluation else ()
    return {
        "facts": {
            "domains": {x.name: list(x.evidence) for x in c.domains},
            "contexts": [x.name for x in c.contexts],
            "patterns": [x.name for x in c.patterns],
        },
        "rulesFired": [{"rule": f.rule, "source": f"{f.source.path}:{f.source.line}"} for f in firings],
        "scores": [
            {"plugin": s.plugin, "score": round(s.score, 1), "eligible": s.eligible, "reason": s.reason}
            for s in [s for s in r.scores if s.score > 0 or not s.eligible][:limit]
        ],
        "decision": {
            "primary": d.primary_plugin,
            "fallbacks": list(d.fallback_plugins),
            "collaborators": list(r.collaborators()),
            "strategy": d.execution_strategy,
            "notes": list(d.notes),
        },
    }


def compact_lines(r: RoutingResult) -> list[str]:
    """:func:`compact_json` as a few lines under a failing case."""
    data = compact_json(r)
    facts = data["facts"]
    domains = ", ".join(f"{n} ({', '.join(e)})" for n, e in facts["domains"].items()) or "(none)"
    extra = "".join(f"; {k}: {', '.join(facts[k])}" for k in ("contexts", "patterns") if facts[k])
    rules = ", ".join(f"{f['rule']} ({f['source']})" for f in data["rulesFired"]) or "(none)"
    scores = ", ".join(
        f"{s['plugin']} {s['score']}" + ("" if s["eligible"] else f" [not eligible: {s['reason']}]")
        for s in data["scores"]
    )
    d = data["decision"]
    decision = f"primary {d['primary'] or 'no route'}; strategy {d['strategy']}"
    decision += f"; fallbacks {', '.join(d['fallbacks']) or '(none)'}"
    if d["collaborators"]:
        decision += f"; collaborators {', '.join(d['collaborators'])}"
    lines = [f"facts     domains: {domains}{extra}", f"rules     {rules}", f"scores    {scores or '(none)'}"]
    lines.append(f"decision  {decision}")
    return lines + [f"note      {n}" for n in d["notes"]]
