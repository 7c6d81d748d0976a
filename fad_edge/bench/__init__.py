"""Benchmark support: cost-only replicas of published listener pipelines, measured beside ours."""
