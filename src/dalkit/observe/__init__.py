"""Query observability: the slow-query log, query statistics, N+1 detection, EXPLAIN, table
statistics, index advice and the Prometheus collector."""
