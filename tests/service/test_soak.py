"""A short run of the soak script (the 60 s version is `python -m tests.service.soak`)."""

from __future__ import annotations

from tests.service import soak


def test_short_soak_has_no_errors_and_flat_memory():
    summary = soak.soak(seconds=4, connections=16)
    assert summary["errors"] == {} and summary["requests"] > 100
    assert summary["rss_growth_after_warmup_kb"] < 20 * 1024
    assert summary["metrics_requests_total"] == summary["requests"]
    assert summary["access_log_lines"] >= summary["requests"]
