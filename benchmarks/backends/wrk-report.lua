-- Prints one machine-readable summary line for benchmarks/dataplane.py (latency in microseconds).
-- %.0f rather than %d: byte counts pass 2^31 in a bulk run.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %.0f, "bytes": %.0f, "duration_us": %.0f, ' ..
    '"connect_errors": %.0f, "read_errors": %.0f, "write_errors": %.0f, ' ..
    '"status_errors": %.0f, "timeouts": %.0f, ' ..
    '"p50_us": %.0f, "p90_us": %.0f, "p99_us": %.0f, "max_us": %.0f, "mean_us": %.1f}\n',
    summary.requests, summary.bytes, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
