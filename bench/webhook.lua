-- wrk script: POSTs pre-signed lead deliveries (bench/gen_webhooks.py) to /webhooks/leads,
-- each once (generate more than the run sends: a repeated delivery answers 200, not 202).
local requests = {}
local i = 0
function init(args)
  for line in io.lines(os.getenv("WEBHOOKS") or "/tmp/crm-bench/webhooks.tsv") do
    local id, ts, sig, body = line:match("([^\t]+)\t([^\t]+)\t([^\t]+)\t(.*)")
    requests[#requests + 1] = wrk.format("POST", "/webhooks/leads", {
      ["webhook-id"] = id, ["webhook-timestamp"] = ts, ["webhook-signature"] = sig,
      ["content-type"] = "application/json",
    }, body)
  end
end
function request()
  i = i % #requests + 1
  return requests[i]
end
