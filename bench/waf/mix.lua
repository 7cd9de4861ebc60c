-- The request mix of bench/waf.sh: benign traffic a CRS at paranoia level 1
-- lets through. wrk calls request() for every request; the three kinds come
-- in turn (a third each): a GET with a query string, an urlencoded POST
-- form, and a JSON POST body. Host comes from the URL wrk is given.
local common = {
  ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) wrk-bench",
  ["Accept"] = "text/html,application/json;q=0.9,*/*;q=0.8",
  ["Accept-Language"] = "en-GB,en;q=0.5",
}

local function with(extra)
  local h = {}
  for k, v in pairs(common) do h[k] = v end
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end

local reqs

-- Built in init, when wrk.headers carries the Host of the URL.
init = function(args)
  reqs = {
  wrk.format("GET", "/products?id=42&category=books&sort=price", with()),
  wrk.format("POST", "/login", with({["Content-Type"] = "application/x-www-form-urlencoded"}),
    "username=alice&password=correct+horse+battery&remember=on"),
  wrk.format("POST", "/api/orders", with({["Content-Type"] = "application/json"}),
    '{"customer":"alice","items":[{"sku":"B-1234","qty":2},{"sku":"C-77","qty":1}],"note":"leave it at the door"}'),
  }
end

local i = 0
request = function()
  i = i % #reqs + 1
  return reqs[i]
end
