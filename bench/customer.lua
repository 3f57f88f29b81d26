-- wrk script: POST /graphql `customer(id)` for ids drawn at random from bench/ids.txt
-- (one UUID per line, written by bench/run.sh).
local ids = {}
for line in io.lines(os.getenv("CRM_BENCH_IDS") or "bench/ids.txt") do
  ids[#ids + 1] = line
end
math.randomseed(42)

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("CRM_BENCH_TOKEN")

local query = [[query($id: ID!) { customer(id: $id) { id name email phone company status tags createdAt } }]]

request = function()
  local id = ids[math.random(#ids)]
  local body = '{"query":"' .. query .. '","variables":{"id":"' .. id .. '"}}'
  return wrk.format(nil, nil, nil, body)
end

response = function(status, headers, body)
  if status ~= 200 or not body:find('"customer":{') then
    print("unexpected response: " .. status .. " " .. body:sub(1, 200))
    wrk.thread:stop()
  end
end
