-- Settles a reservation once: refunds or charges the difference between what a
-- call used and what it reserved, in each bucket it was drawn from. The same
-- arithmetic as tollhouse/buckets/reserve.py (settle), on the Redis server's clock.
--
-- KEYS[1] tenant bucket, KEYS[2] organisation bucket, KEYS[3] the reservation
-- ARGV: tenant_rate, tenant_capacity, tenant_difference,
--       org_rate, org_capacity, org_difference (rate 0 = not drawn from), idle_ttl_ms
-- Returns: {applied, tenant_tokens, org_tokens, now} ("-" for a bucket left alone);
-- applied is 0 when the reservation was settled already or its time is up.

local ttl = tonumber(ARGV[7])
local clock = redis.call("TIME")
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

local function num(value)
  return string.format("%.17g", value)
end

if redis.call("DEL", KEYS[3]) == 0 then
  return {0, "-", "-", num(now)}
end

local function settle(key, rate, cap, difference)
  if rate <= 0 then return "-" end
  local state = redis.call("HMGET", key, "tokens", "at")
  local tokens, at = tonumber(state[1]), tonumber(state[2])
  if tokens == nil or at == nil then
    tokens, at = cap, now
  elseif now > at then
    tokens, at = math.min(cap, tokens + (now - at) * rate), now
  else
    tokens = math.min(tokens, cap)
  end
  tokens = math.min(cap, tokens - difference)
  redis.call("HSET", key, "tokens", num(tokens), "at", num(at))
  redis.call("PEXPIRE", key, ttl)
  return num(tokens)
end

return {
  1,
  settle(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])),
  settle(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])),
  num(now),
}
