"""Production audit: shift, label shift, subgroup bias, rebalancing, monitoring.

    from ferwild.audit import AuditConfig, run_audit
    audit = run_audit("runs/best", "prepared/reference", "prepared/production", "audit_out")
    audit["covariate_shift"]["p_value"], audit["verdict"]["findings"]

The pieces, in pipeline order: ``model_outputs`` (cached embeddings and probabilities of a run on a
prepared dataset), ``stats`` (two-sample and label-shift tests), ``groups`` (subgroup metrics
with bootstrap intervals, data health), ``core`` (the audit), ``report`` (HTML + Markdown);
``rebalance`` (attribute x class balanced training data) and ``monitor`` (shift over time).
"""

from ferwild.audit.core import AuditConfig, run_audit
from ferwild.audit.monitor import MonitorConfig, monitor
from ferwild.audit.rebalance import RebalanceConfig, rebalance

__all__ = ["AuditConfig", "run_audit", "MonitorConfig", "monitor", "RebalanceConfig", "rebalance"]
