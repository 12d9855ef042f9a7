-- One admission against a tenant bucket and the organisation bucket, atomically.
-- The same arithmetic as tollhouse/buckets/bucket.py (take_pair), on the Redis
-- server's clock so that every replica agrees.
--
-- KEYS[1] tenant bucket, KEYS[2] organisation bucket (hashes: tokens, at)
-- ARGV: tenant_rate, tenant_capacity, org_rate, org_capacity (rate 0 = no bucket),
--       max_wait, enforce_tenant (0/1), enforce_org (0/1), idle_ttl_ms
-- Returns: {allowed, wait, tenant_refused, org_refused, tenant_tokens, org_tokens}
-- (floats as strings; a missing bucket's tokens as "-").

local t_rate, t_cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local o_rate, o_cap = tonumber(ARGV[3]), tonumber(ARGV[4])
local max_wait = tonumber(ARGV[5])
local enforce_t, enforce_o = ARGV[6] == "1", ARGV[7] == "1"
local ttl = tonumber(ARGV[8])

local clock = redis.call("TIME")
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

local function current(key, rate, cap)
  local state = redis.call("HMGET", key, "tokens", "at")
  local tokens, at = tonumber(state[1]), tonumber(state[2])
  if tokens == nil or at == nil then
    return cap, now
  end
  local elapsed = now - at
  if elapsed <= 0 then
    return math.min(tokens, cap), at
  end
  return math.min(cap, tokens + elapsed * rate), now
end

-- returns allowed, wait, tokens_after, at
local function take(key, rate, cap)
  local tokens, at = current(key, rate, cap)
  local after = tokens - 1
  local wait = 0
  if after < 0 then wait = -after / rate end
  if wait <= max_wait + 1e-9 then
    return true, wait, after, at, tokens
  end
  return false, (1 - tokens) / rate, tokens, at, tokens
end

local t_ok, t_wait, t_after, t_at, t_before = true, 0, nil, nil, nil
local o_ok, o_wait, o_after, o_at, o_before = true, 0, nil, nil, nil
if t_rate > 0 then t_ok, t_wait, t_after, t_at, t_before = take(KEYS[1], t_rate, t_cap) end
if o_rate > 0 then o_ok, o_wait, o_after, o_at, o_before = take(KEYS[2], o_rate, o_cap) end

local blocked = ((not t_ok) and enforce_t) or ((not o_ok) and enforce_o)
local wait = 0
local t_tokens, o_tokens = t_before, o_before
if blocked then
  if not t_ok then wait = math.max(wait, t_wait) end
  if not o_ok then wait = math.max(wait, o_wait) end
else
  if t_ok then wait = math.max(wait, t_wait) end
  if o_ok then wait = math.max(wait, o_wait) end
  t_tokens, o_tokens = t_after, o_after
end

local function store(key, tokens, at, rate)
  if tokens == nil then return end
  redis.call("HSET", key, "tokens", tostring(tokens), "at", tostring(at))
  redis.call("PEXPIRE", key, ttl)
end
store(KEYS[1], t_tokens, t_at, t_rate)
store(KEYS[2], o_tokens, o_at, o_rate)

local function show(value)
  if value == nil then return "-" end
  return tostring(value)
end
return {
  blocked and 0 or 1,
  tostring(wait),
  (not t_ok) and 1 or 0,
  (not o_ok) and 1 or 0,
  show(t_tokens),
  show(o_tokens),
  tostring(now),
}
