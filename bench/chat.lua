-- wrk script: POST an OpenAI chat completion request, non-streaming or
-- streaming, and print one machine-readable summary line at the end.
--
-- Environment (read by every wrk thread):
--   BENCH_PATH    request path          (default /v1/chat/completions)
--   BENCH_STREAM  1 = "stream": true with include_usage (default 0)
--   BENCH_KEY     API key for the Authorization header (default sk-bench)
--   BENCH_MODEL   model name            (default bench-model)
--   BENCH_MAX_TOKENS  max_tokens        (default 16)
--
-- The summary line (parsed by proxy_bench.sh):
--   WRKRESULT requests=N duration_us=N p50_us=N p99_us=N status_errors=N
--             connect_errors=N read_errors=N write_errors=N timeouts=N bytes=N
-- status_errors is wrk's count of answers with a status >= 400, i.e. the
-- non-2xx answers (the servers here never redirect).

local path = os.getenv("BENCH_PATH") or "/v1/chat/completions"
local stream = os.getenv("BENCH_STREAM") == "1"
local key = os.getenv("BENCH_KEY") or "sk-bench"
local model = os.getenv("BENCH_MODEL") or "bench-model"
local max_tokens = tonumber(os.getenv("BENCH_MAX_TOKENS") or "16")

wrk.method = "POST"
wrk.path = path
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.body = string.format(
   '{"model":"%s","messages":[{"role":"system","content":"You are a helpful assistant."},' ..
   '{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":%d%s}',
   model, max_tokens, stream and ',"stream":true,"stream_options":{"include_usage":true}' or '')

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "WRKRESULT requests=%d duration_us=%d p50_us=%d p99_us=%d status_errors=%d " ..
      "connect_errors=%d read_errors=%d write_errors=%d timeouts=%d bytes=%d\n",
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      e.status, e.connect, e.read, e.write, e.timeout, summary.bytes))
end
