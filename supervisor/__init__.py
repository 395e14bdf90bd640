"""The supervisor: consumes Airflow's Celery workloads and runs them in bundle runtimes.

Importing this package starts nothing; `supervisor.cli` is the entry point.
"""

__version__ = "0.1.0"
