"""Reports of runs: the HTML/Markdown run report, the cost projection, the runs registry and optional MLflow tracking."""
