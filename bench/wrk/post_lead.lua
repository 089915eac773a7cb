-- wrk script: POST a distinct, valid lead per request (distinct e-mails, so none is a duplicate;
-- each at a domain of its own, so intake's cache of validated domains never helps).
-- Counts answers that are not 202 so the harness can refuse a run that was not all-accepted.
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  bad = 0
  -- The harness names each run: wrk's Lua never seeds math.random, so a random run id
  -- was the same in every run and a second run re-sent the first one's leads (duplicates).
  path = args[1] or "/v1/leads"
  run = args[2] or error("the harness passes a run id")
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer dev"
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"source":"api","name":"Bench Lead","email":"lead@b%s-%d-%d.bench.example",' ..
    '"company":"Bench LLC","services":["seo"],"budget":"200000","timeframe":"now",' ..
    '"role_in_purchase":"decision_maker","company_size":"101-500","consent":true,' ..
    '"utm":{"source":"bench","campaign":"load"}}', run, tid, counter)
  return wrk.format("POST", path, nil, body)
end

function response(status, headers, body)
  if status ~= 202 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local not_accepted = 0
  for _, thread in ipairs(threads) do not_accepted = not_accepted + thread:get("bad") end
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d not_accepted=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.status + summary.errors.timeout, not_accepted))
end
