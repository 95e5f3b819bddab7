"""What a person reads: the live progress and tables, results.json, records.csv and report.html."""
