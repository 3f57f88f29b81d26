-- wrk script: POST /graphql, a `customers(first: 50)` page with each customer's last five
-- interactions (newest customers first).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("CRM_BENCH_TOKEN")
wrk.body = '{"query":"{ customers(first: 50) { nodes { id name email company status interactions(first: 5) { id kind outcome occurredAt } } pageInfo { hasNextPage endCursor } } }"}'

response = function(status, headers, body)
  if status ~= 200 or body:find('"errors"') then
    print("unexpected response: " .. status .. " " .. body:sub(1, 200))
    wrk.thread:stop()
  end
end
