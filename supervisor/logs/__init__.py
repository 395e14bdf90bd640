"""Task logs as Airflow reads them: JSON-lines files under base_log_folder (files.py)."""
