"""Airflow's Task Execution API: the httpx client (`client.py`) and reply models (`models.py`)."""
