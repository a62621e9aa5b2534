-- wrk script: POST realistic Alertmanager v4 notifications, each with its own group key.
local counter = 0
-- Each wrk thread has its own Lua state, seeded alike unless told apart: without this, both threads (and
-- every run) send the same group keys, which the bot's queued marker (REDIS_MIN_REPLICAS_ACK) rightly
-- takes as retries of one notification.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end
function init(args)
  math.randomseed(os.time() * 1000 + (thread_id or 0))
end
local token = os.getenv("BENCH_TOKEN") or "bench-token"

local function alert(i, n)
  return string.format([[{"status":"firing","labels":{"alertname":"VLLMHighQueueDepth","severity":"warning","namespace":"llm-d","deployment":"vllm-decode","pod":"vllm-decode-%d","model_name":"meta-llama/Llama-3.1-8B-Instruct","instance":"10.0.%d.%d:8000"},"annotations":{"summary":"decode queue depth above 10 for 2m","description":"vllm:num_requests_waiting is 23 on vllm-decode-%d; p95 TTFT 4.1s","runbook_url":"https://runbooks.example/high-latency"},"startsAt":"2026-11-26T10:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus:9090/graph?g0.expr=vllm%%3Anum_requests_waiting+%%3E+10","fingerprint":"%08x%08x"}]], i, n % 250, i, i, n, i)
end

request = function()
  counter = counter + 1
  local alerts = {}
  for i = 0, 4 do alerts[#alerts + 1] = alert(i, counter) end
  local body = string.format([[{"version":"4","groupKey":"{}:{alertname=\"VLLMHighQueueDepth\", namespace=\"llm-d\", run=\"%d-%d\"}","truncatedAlerts":0,"status":"firing","receiver":"incident-bot","groupLabels":{"alertname":"VLLMHighQueueDepth"},"commonLabels":{"alertname":"VLLMHighQueueDepth","namespace":"llm-d","severity":"warning"},"commonAnnotations":{"summary":"decode queue depth above 10 for 2m"},"externalURL":"http://alertmanager:9093","alerts":[%s]}]], math.random(1, 1000000000), counter, table.concat(alerts, ","))
  return wrk.format("POST", "/alertmanager", {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end
