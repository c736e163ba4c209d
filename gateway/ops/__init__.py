"""The process and its operators: settings (`config`), secrets
(`credentials`), metrics, logs, tracing, process tuning and /proc readings."""
