"""The reliability tier: scenarios that mix faults, bad input and load. The scenarios live in
tests/support/reliability (shared with the security tier and bench/reliability_report.py); the
fixtures (`http`, `free_port`, ...) are tests/support's."""
