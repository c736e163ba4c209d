"""The process and its operators: settings (`config`), secrets
(`credentials`), metrics, logs, process tuning and /proc readings."""
