-- Put a hold's worst case in flight in every period of a tenant's budget, or in none.
-- The same rule as tollhouse/quota/spend_memory.py (MemorySpend.reserve), on the Redis
-- server's clock: holds past their deadline stop counting first (their replica is gone).
--
-- KEYS: for each period, its hash (committed, in_flight, h:<hold> = amount) and its
--       sorted set of hold deadlines (ms)
-- ARGV: hold, amount (micro-dollars), ttl_ms, then for each period: limit, expires_at (s)
-- Returns: {refused period index (0-based; -1: reserved), spent in each period...}

local hold, amount, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call("TIME")
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local n = #KEYS / 2
local spent = {}

for i = 1, n do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  for _, gone in ipairs(redis.call("ZRANGEBYSCORE", z, "-inf", now)) do
    local held = redis.call("HGET", h, "h:" .. gone)
    if held then
      redis.call("HDEL", h, "h:" .. gone)
      redis.call("HINCRBY", h, "in_flight", -tonumber(held))
    end
    redis.call("ZREM", z, gone)
  end
  local committed = tonumber(redis.call("HGET", h, "committed") or "0")
  local in_flight = tonumber(redis.call("HGET", h, "in_flight") or "0")
  spent[i] = committed + in_flight
end

local refused = -1
for i = 1, n do
  if spent[i] + amount > tonumber(ARGV[2 + 2 * i]) then
    refused = i - 1
    break
  end
end

if refused < 0 then
  for i = 1, n do
    local h, z = KEYS[2 * i - 1], KEYS[2 * i]
    local expires = tonumber(ARGV[3 + 2 * i])
    redis.call("HSET", h, "h:" .. hold, amount)
    redis.call("HINCRBY", h, "in_flight", amount)
    redis.call("ZADD", z, now + ttl, hold)
    redis.call("EXPIREAT", h, expires)
    redis.call("EXPIREAT", z, expires)
    spent[i] = spent[i] + amount
  end
end

local reply = {refused}
for i = 1, n do reply[i + 1] = spent[i] end
return reply
